"""Fake LLM servers: real HTTP on 127.0.0.1 speaking OpenAI's chat-completions protocol or
Anthropic's Messages protocol (streaming included), with scripted behaviour.

Each request to the chat endpoint consumes the next :class:`Step` of the script (then the
``default`` step); every request is recorded in :attr:`FakeLLMServer.requests`. The server is
``asyncio.start_server`` with a minimal HTTP/1.1 parser, run in a background thread with its
own event loop, so it serves sync and async tests alike and can abort a connection in the
middle of a stream (``Step("reset", reset_after=n)``).

Notes on the steps:

* ``delay`` is honoured by every kind: ``ok``/``slow`` wait it before the response
  (non-stream) or before each delta (stream); ``status``/``malformed`` before the response.
  ``gap`` replaces the server's ``stream_interval`` (the pause before each delta after the
  first) for one step: ``gap=3600`` is an upstream that stalls after its first delta.
* ``hold``: the server answers only once the test sets this event (or the client leaves),
  so a test can act while a request is known to be in flight.
* ``malformed`` on a streaming request sends an event stream: ``body`` as given, or by default
  one event whose data is not JSON. A custom ``body`` can script protocol events, e.g. an
  Anthropic ``error`` event in the middle of a stream.
* ``disconnects`` counts streaming requests (``stream: true``) whose client went away before
  the stream finished, including ``hang`` steps the client gave up on. ``finished`` counts
  connections the server is done with, so a test can wait for that instead of for time.
* ``before_delta(i)``, if given, is called (in a worker thread; it may block) before the
  server sends delta ``i >= 1`` of a stream: a test can pace a stream by its own events.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from tests.waiting import HANG_TIMEOUT

__all__ = ["FAKE_MODEL", "FakeLLMServer", "Recorded", "Step", "split_deltas"]

FAKE_MODEL = "fake-model"
_MAX_HEADER_LINES = 100
_HOLD_POLL = 0.01  # how often a held answer looks at its gate
_MAX_BODY = 16 * 1024 * 1024

StepKind = Literal["ok", "status", "slow", "reset", "malformed", "hang"]


@dataclass
class Step:
    """What the server does with one request (see the module docstring)."""

    kind: StepKind = "ok"
    text: str = "Hello from the fake model [1]."
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset_after: int = 0
    body: bytes | None = None
    gap: float | None = None
    hold: threading.Event | None = None


@dataclass
class Recorded:
    """One request as the server received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    at: float  # time.monotonic()


def split_deltas(text: str) -> list[str]:
    """``text`` as word-sized deltas (a word with the whitespace before it); they join back
    into ``text`` exactly."""
    pieces = re.findall(r"\s*\S+", text)
    rest = text[len("".join(pieces)) :]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces = [rest]
    return pieces


class _ClientGone(Exception):
    """The client closed the connection while the server was answering."""


@dataclass
class _Exchange:
    """One connection's request and the means to answer it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    streaming: bool
    eof: asyncio.Future[bytes] | None = None

    def watch(self) -> None:
        # The request has been read in full: anything the client does now (close) is EOF.
        self.eof = asyncio.ensure_future(self.reader.read(1))

    def gone(self) -> bool:
        return self.eof is not None and self.eof.done()

    async def hold(self, gate: threading.Event) -> None:
        """Wait until the test sets ``gate``, unless the client goes away first."""
        while not gate.is_set():
            if self.eof is None:
                await asyncio.sleep(_HOLD_POLL)
                continue
            await asyncio.wait({self.eof}, timeout=_HOLD_POLL)
            if self.eof.done():
                raise _ClientGone

    async def pause(self, seconds: float) -> None:
        """Sleep, unless the client goes away first (then :class:`_ClientGone`)."""
        if self.eof is None:
            # The scripted stall itself (the request is not fully read yet, so there is no
            # end-of-file to watch): part of the scenario, not a wait for a condition.
            await asyncio.sleep(seconds)
            return
        if seconds > 0:
            await asyncio.wait({self.eof}, timeout=seconds)
        if self.eof.done():
            raise _ClientGone

    async def send(self, data: bytes) -> None:
        if self.gone() or self.writer.transport.is_closing():
            raise _ClientGone
        self.writer.write(data)
        try:
            await self.writer.drain()
        except ConnectionError as exc:
            raise _ClientGone from exc

    def close(self) -> None:
        if self.eof is not None:
            self.eof.cancel()
            if self.eof.done() and not self.eof.cancelled():
                self.eof.exception()  # retrieved: no "never retrieved" warning
        if not self.writer.transport.is_closing():
            self.writer.close()  # graceful: what is still buffered goes out first


def _head(status: int, headers: dict[str, str], content_type: str, length: int | None) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Overloaded" if status == 529 else "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", "Connection: close"]
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    lines.append(framing)
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


_LAST_CHUNK = b"0\r\n\r\n"


class FakeLLMServer:
    """A scripted OpenAI- or Anthropic-protocol server on 127.0.0.1 (a random free port).

    Use it as a context manager: ``with FakeLLMServer("openai", [Step(...)]) as fake:``.
    ``base_url`` is what a provider is configured with (``.../v1`` for OpenAI).
    """

    def __init__(
        self,
        protocol: Literal["openai", "anthropic"],
        script: Sequence[Step] = (),
        *,
        default: Step | None = None,
        stream_interval: float = 0.0,
        before_delta: Callable[[int], None] | None = None,
    ) -> None:
        if protocol not in ("openai", "anthropic"):
            raise ValueError(f"unknown protocol {protocol!r}; valid: openai, anthropic")
        self.protocol = protocol
        self.default = default if default is not None else Step()
        self.stream_interval = stream_interval
        self.before_delta = before_delta
        self.requests: list[Recorded] = []
        self.disconnects = 0
        self.finished = 0
        self.base_url = ""
        self._script: deque[Step] = deque(script)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._error: BaseException | None = None

    # -- the script -------------------------------------------------------------------------

    def push(self, *steps: Step) -> None:
        """Append ``steps`` to the script."""
        with self._lock:
            self._script.extend(steps)

    def _next_step(self) -> Step:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> FakeLLMServer:
        self._thread = threading.Thread(
            target=self._run, name=f"fake-{self.protocol}-llm", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout=HANG_TIMEOUT) or not self.base_url:
            raise RuntimeError(f"the fake {self.protocol} server did not start: {self._error!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has just ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by __enter__
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        root = f"http://127.0.0.1:{port}"
        self.base_url = root + "/v1" if self.protocol == "openai" else root
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await server.wait_closed()

    # -- HTTP -------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        exchange = _Exchange(reader, writer, streaming=False)
        try:
            request = await self._read_request(reader)
            if request is None:
                return
            method, path, headers, raw = request
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = None
            self.requests.append(Recorded(method, path, headers, body, time.monotonic()))
            exchange.streaming = isinstance(body, dict) and body.get("stream") is True
            exchange.watch()
            await self._respond(exchange, method, path, headers, body)
        except _ClientGone:
            if exchange.streaming:
                with self._lock:
                    self.disconnects += 1
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, UnicodeDecodeError):
            pass  # a broken request or connection: nothing to answer
        finally:
            exchange.close()
            self._handlers.discard(task)
            with self._lock:
                self.finished += 1

    @staticmethod
    async def _read_request(
        reader: asyncio.StreamReader,
    ) -> tuple[str, str, dict[str, str], bytes] | None:
        line = await reader.readline()
        if not line.strip():
            return None
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADER_LINES):
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        else:
            length = int(headers.get("content-length", "0"))
            if length > _MAX_BODY:
                raise ValueError("request body too large")
            body = await reader.readexactly(length) if length else b""
        return method.upper(), target.split("?", 1)[0], headers, body

    async def _respond(
        self, ex: _Exchange, method: str, path: str, headers: dict[str, str], body: Any
    ) -> None:
        chat_path = "/v1/chat/completions" if self.protocol == "openai" else "/v1/messages"
        if self.protocol == "openai" and method == "GET" and path == "/v1/models":
            models = {"object": "list", "data": [{"id": FAKE_MODEL, "object": "model"}]}
            await self._send_json(ex, 200, models, {})
            return
        if path != chat_path:
            await self._send_json(ex, 404, self._error_body(404, f"no route {path}", headers), {})
            return
        if method != "POST":
            await self._send_json(ex, 405, self._error_body(405, "use POST", headers), {})
            return
        step = self._next_step()
        request = body if isinstance(body, dict) else {}
        if step.hold is not None:
            await ex.hold(step.hold)
        if step.kind == "hang":
            await ex.pause(24 * 3600)  # until the client leaves or the server stops
            return
        if step.kind == "reset" and step.reset_after <= 0:
            await ex.pause(step.delay)
            ex.writer.transport.abort()
            return
        if step.kind == "status":
            await ex.pause(step.delay)
            error = self._error_body(step.status, step.text, headers)
            await self._send_json(ex, step.status, error, step.headers)
            return
        if step.kind == "malformed":
            await ex.pause(step.delay)
            await self._send_malformed(ex, step)
            return
        if ex.streaming:
            await self._stream(ex, step, request)
            return
        await ex.pause(step.delay)
        payload = json.dumps(self._completion(step.text, request)).encode()
        if step.kind == "reset":  # part of the body, then the connection is cut
            head = _head(200, step.headers, "application/json", len(payload))
            await ex.send(head + payload[: len(payload) // 2])
            ex.writer.transport.abort()
            return
        await ex.send(_head(200, step.headers, "application/json", len(payload)) + payload)

    async def _send_json(
        self, ex: _Exchange, status: int, value: Any, headers: dict[str, str]
    ) -> None:
        payload = json.dumps(value).encode()
        await ex.send(_head(status, headers, "application/json", len(payload)) + payload)

    async def _send_malformed(self, ex: _Exchange, step: Step) -> None:
        if not ex.streaming:
            payload = step.body if step.body is not None else b"{not json"
            await ex.send(_head(200, step.headers, "application/json", len(payload)) + payload)
            return
        if step.body is not None:
            payload = step.body
        elif self.protocol == "openai":
            payload = b"data: {not json\n\n"
        else:
            payload = b"event: content_block_delta\ndata: {not json\n\n"
        head = _head(200, step.headers, "text/event-stream", None)
        await ex.send(head + _chunk(payload) + _LAST_CHUNK)

    # -- protocol bodies --------------------------------------------------------------------

    def _error_body(self, status: int, text: str, headers: dict[str, str]) -> dict[str, Any]:
        message = {
            400: "Invalid request: messages is malformed.",
            401: "Incorrect API key provided: {key}.",
            403: "The API key {key} may not use this model.",
            404: text,
            405: text,
            429: "Rate limit reached. Please try again later.",
            529: "Overloaded",
        }.get(status, "The server had an error while processing your request.")
        # Like real services, quote the credential back: providers must redact it.
        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        message = message.replace("{key}", key or "(none)")
        if self.protocol == "openai":
            kind = {400: "invalid_request_error", 401: "invalid_request_error",
                    403: "permission_error", 404: "not_found_error",
                    429: "rate_limit_exceeded"}.get(status, "server_error")
            code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
            return {"error": {"message": message, "type": kind, "param": None, "code": code}}
        kind = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    @staticmethod
    def _prompt_tokens(request: dict[str, Any]) -> int:
        texts = [str(request.get("system", ""))]
        messages = request.get("messages")
        if isinstance(messages, list):
            texts += [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
        return sum(len(text.split()) for text in texts)

    def _model(self, request: dict[str, Any]) -> str:
        model = request.get("model")
        return model if isinstance(model, str) and model else FAKE_MODEL

    def _completion(self, text: str, request: dict[str, Any]) -> dict[str, Any]:
        prompt, completion = self._prompt_tokens(request), len(split_deltas(text))
        model = self._model(request)
        if self.protocol == "openai":
            return {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion},
        }

    # -- streaming --------------------------------------------------------------------------

    async def _stream(self, ex: _Exchange, step: Step, request: dict[str, Any]) -> None:
        deltas = split_deltas(step.text)
        prompt = self._prompt_tokens(request)
        openai = self.protocol == "openai"
        events = self._openai_events if openai else self._anthropic_events
        opening, delta_event, closing = events(request, prompt, len(deltas))
        await ex.send(_head(200, step.headers, "text/event-stream", None) + _chunk(opening))
        for i, delta in enumerate(deltas):
            if step.kind == "reset" and i >= step.reset_after:
                ex.writer.transport.abort()
                return
            gap = self.stream_interval if step.gap is None else step.gap
            await ex.pause(step.delay + (gap if i else 0.0))
            if i and self.before_delta is not None:
                await asyncio.to_thread(self.before_delta, i)
            await ex.send(_chunk(delta_event(delta)))
        if step.kind == "reset":  # all deltas out, the end never comes
            ex.writer.transport.abort()
            return
        ex.writer.write(_chunk(closing) + _LAST_CHUNK)  # finished: no await before this
        with contextlib.suppress(ConnectionError):
            await ex.writer.drain()

    def _openai_events(
        self, request: dict[str, Any], prompt: int, completion: int
    ) -> tuple[bytes, Any, bytes]:
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        model = self._model(request)
        options = request.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            value = {"id": ident, "object": "chat.completion.chunk", "created": created,
                     "model": model, "choices": choices, **extra}
            if with_usage and "usage" not in extra:
                value["usage"] = None
            return f"data: {json.dumps(value)}\n\n".encode()

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        opening = chunk(choice({"role": "assistant", "content": ""}))
        closing = chunk(choice({}, "stop"))
        if with_usage:
            closing += chunk([], usage={"prompt_tokens": prompt, "completion_tokens": completion,
                                        "total_tokens": prompt + completion})
        closing += b"data: [DONE]\n\n"
        return opening, lambda text: chunk(choice({"content": text})), closing

    def _anthropic_events(
        self, request: dict[str, Any], prompt: int, completion: int
    ) -> tuple[bytes, Any, bytes]:
        def event(name: str, value: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: {json.dumps({'type': name, **value})}\n\n".encode()

        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": self._model(request), "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": 1},
        }
        opening = (
            event("message_start", {"message": message})
            + event("content_block_start",
                    {"index": 0, "content_block": {"type": "text", "text": ""}})
            + event("ping", {})
        )
        closing = (
            event("content_block_stop", {"index": 0})
            + event("message_delta", {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": completion},
            })
            + event("message_stop", {})
        )

        def delta(text: str) -> bytes:
            return event("content_block_delta",
                         {"index": 0, "delta": {"type": "text_delta", "text": text}})

        return opening, delta, closing
