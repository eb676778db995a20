"""The OpenAI-compatible and Anthropic providers against real fake servers on 127.0.0.1.

Timeouts are shown without timing anything: an upstream that stalls far beyond every other
limit (settings ``timeout_seconds`` raised to its maximum, a 60 s hang guard around the call)
can only be ended by the attempt's budget, and the error names that budget. A stream that
outlives its budget is paced by the test on the event loop's clock (``loop_clock``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Literal

import httpx
import pytest

from ragd.generation.base import ChatRequest, Message, ProviderError, StreamChunk
from ragd.generation.providers.anthropic import AnthropicProvider
from ragd.generation.providers.http import Redactor, parse_retry_after
from ragd.generation.providers.openai import OpenAIProvider
from ragd.settings import ProviderSettings
from tests.generation.fakes import FakeLLMServer, Step, split_deltas
from tests.loop_clock import LoopClock
from tests.waiting import HANG_TIMEOUT, eventually

Protocol = Literal["openai", "anthropic"]
PROTOCOLS: list[Protocol] = ["openai", "anthropic"]
API_KEY = "sk-test-secret-key-0123456789"
TEXT = Step().text
SYSTEM = "Answer only from the numbered context blocks."
REQUEST = ChatRequest(
    messages=(
        Message("system", SYSTEM),
        Message("user", "Context:\n[1] Basalt cools into columns.\n\nQuestion: Why columns?"),
    ),
    question="Why columns?",
)

AnyProvider = OpenAIProvider | AnthropicProvider


@pytest.fixture
def servers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture
async def providers() -> AsyncIterator[list[AnyProvider]]:
    made: list[AnyProvider] = []
    yield made
    for provider in made:
        await provider.aclose()


Make = Callable[..., tuple[FakeLLMServer, AnyProvider]]


@pytest.fixture
def make(servers: ExitStack, providers: list[AnyProvider]) -> Make:
    """``make(protocol, *script, stream_interval=..., before_delta=..., **settings)``: a fake
    and a provider."""

    def build(
        protocol: Protocol,
        *script: Step,
        stream_interval: float = 0.0,
        before_delta: Callable[[int], None] | None = None,
        **settings: Any,
    ) -> tuple[FakeLLMServer, AnyProvider]:
        server = servers.enter_context(
            FakeLLMServer(protocol, script, stream_interval=stream_interval,
                          before_delta=before_delta)
        )
        values: dict[str, Any] = {
            "name": f"fake-{protocol}",
            "type": protocol,
            "model": "fake-model",
            "base_url": server.base_url,
            "api_key": API_KEY,
            "max_tokens": 77,
            "temperature": 0.3,
            "extra_headers": {"X-Ragd-Test": "yes"},
            "connect_timeout_seconds": 2.0,
        }
        values.update(settings)
        config = ProviderSettings(**values)
        provider: AnyProvider = (
            OpenAIProvider(config) if protocol == "openai" else AnthropicProvider(config)
        )
        providers.append(provider)
        return server, provider

    return build


async def collect(stream: AsyncIterator[StreamChunk], into: list[StreamChunk]) -> None:
    async for chunk in stream:
        into.append(chunk)


async def run(provider: AnyProvider, mode: str, budget: float = HANG_TIMEOUT) -> list[str]:
    """The answer's texts (one for complete, the non-empty deltas for stream)."""
    if mode == "complete":
        return [(await provider.complete(REQUEST, attempt_timeout=budget)).text]
    chunks: list[StreamChunk] = []
    await collect(provider.stream(REQUEST, attempt_timeout=budget), chunks)
    return [c.text for c in chunks if c.text]


#: Far beyond every limit but the attempt budget: a stall this long can only be cut short.
STALL = 3600.0
#: The provider's own default timeout, raised to its maximum so it cannot be what fires.
NO_DEFAULT_TIMEOUT = {"timeout_seconds": 600.0}


# -- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_complete_returns_the_text_usage_and_finish_reason(
    make: Make, protocol: Protocol
) -> None:
    _, provider = make(protocol)
    assert (provider.name, provider.kind, provider.model) == (
        f"fake-{protocol}", protocol, "fake-model",
    )
    completion = await provider.complete(REQUEST, attempt_timeout=HANG_TIMEOUT)
    assert completion.text == TEXT
    assert completion.model == "fake-model"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(split_deltas(TEXT))
    assert completion.usage.prompt_tokens > 0
    assert completion.finish_reason == ("stop" if protocol == "openai" else "end_turn")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_yields_the_deltas_then_usage(make: Make, protocol: Protocol) -> None:
    _, provider = make(protocol)
    chunks: list[StreamChunk] = []
    await collect(provider.stream(REQUEST, attempt_timeout=HANG_TIMEOUT), chunks)
    texts = [c.text for c in chunks if c.text]
    assert "".join(texts) == TEXT
    assert texts == split_deltas(TEXT) and len(texts) > 1
    last = chunks[-1]
    assert last.text == "" and last.usage is not None
    assert last.usage.completion_tokens == len(texts) and last.usage.prompt_tokens > 0
    assert last.finish_reason == ("stop" if protocol == "openai" else "end_turn")


async def test_openai_request_body_and_headers(make: Make) -> None:
    server, provider = make("openai")
    await provider.complete(REQUEST, attempt_timeout=HANG_TIMEOUT)
    await run(provider, "stream")
    plain, streamed = server.requests
    assert (plain.method, plain.path) == ("POST", "/v1/chat/completions")
    assert plain.json == {
        "model": "fake-model",
        "messages": [{"role": m.role, "content": m.content} for m in REQUEST.messages],
        "max_tokens": 77,
        "temperature": 0.3,
        "stream": False,
    }
    assert streamed.json["stream"] is True
    assert streamed.json["stream_options"] == {"include_usage": True}
    for recorded in (plain, streamed):
        assert recorded.headers["authorization"] == f"Bearer {API_KEY}"
        assert recorded.headers["x-ragd-test"] == "yes"


async def test_anthropic_request_body_and_headers(make: Make) -> None:
    server, provider = make("anthropic")
    await provider.complete(REQUEST, attempt_timeout=HANG_TIMEOUT)
    await run(provider, "stream")
    plain, streamed = server.requests
    assert (plain.method, plain.path) == ("POST", "/v1/messages")
    assert plain.json == {
        "model": "fake-model",
        "system": SYSTEM,
        "messages": [{"role": "user", "content": REQUEST.messages[1].content}],
        "max_tokens": 77,
        "temperature": 0.3,
        "stream": False,
    }
    assert streamed.json["stream"] is True
    for recorded in (plain, streamed):
        assert recorded.headers["x-api-key"] == API_KEY
        assert recorded.headers["anthropic-version"] == "2023-06-01"
        assert recorded.headers["x-ragd-test"] == "yes"
        assert "authorization" not in recorded.headers


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_request_overrides_max_tokens_and_temperature(
    make: Make, protocol: Protocol
) -> None:
    server, provider = make(protocol)
    request = ChatRequest(messages=REQUEST.messages, question="q", max_tokens=5, temperature=0.9)
    await provider.complete(request, attempt_timeout=HANG_TIMEOUT)
    body = server.requests[0].json
    assert (body["max_tokens"], body["temperature"]) == (5, 0.9)


async def test_no_api_key_sends_no_credentials(make: Make) -> None:
    server, provider = make("openai", api_key=None, extra_headers={})
    await provider.complete(REQUEST, attempt_timeout=HANG_TIMEOUT)
    assert "authorization" not in server.requests[0].headers


async def test_fake_lists_its_model() -> None:
    with FakeLLMServer("openai") as server:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{server.base_url}/models")
    assert response.json() == {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}


# -- HTTP errors --------------------------------------------------------------------------------

MODES = ["complete", "stream"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_429_is_rate_limited_with_retry_after(
    make: Make, protocol: Protocol, mode: str
) -> None:
    _, provider = make(protocol, Step("status", status=429, headers={"Retry-After": "2"}))
    with pytest.raises(ProviderError) as info:
        await run(provider, mode)
    assert info.value.kind == "rate_limited" and info.value.retryable
    assert info.value.retry_after == 2.0 and info.value.status == 429
    assert "Rate limit" in info.value.message


@pytest.mark.parametrize(
    ("protocol", "status", "kind"),
    [
        ("openai", 500, "overloaded"),
        ("openai", 503, "overloaded"),
        ("openai", 408, "overloaded"),
        ("anthropic", 500, "overloaded"),
        ("anthropic", 529, "overloaded"),
        ("openai", 400, "client"),
        ("anthropic", 400, "client"),
        ("openai", 404, "client"),
        ("openai", 403, "auth"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
async def test_status_codes_map_to_kinds(
    make: Make, protocol: Protocol, status: int, kind: str, mode: str
) -> None:
    _, provider = make(protocol, Step("status", status=status))
    with pytest.raises(ProviderError) as info:
        await run(provider, mode)
    assert (info.value.kind, info.value.status) == (kind, status)
    assert info.value.retry_after is None
    assert API_KEY not in str(info.value)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_401_is_auth_and_never_shows_the_key(
    make: Make, protocol: Protocol, mode: str
) -> None:
    # The fake quotes the key back in its error message, as real services partly do.
    _, provider = make(protocol, Step("status", status=401))
    with pytest.raises(ProviderError) as info:
        await run(provider, mode)
    error = info.value
    assert error.kind == "auth" and not error.counts_as_failure and error.status == 401
    assert "Incorrect API key provided" in error.message
    for text in (str(error), repr(error), error.message):
        assert API_KEY not in text and "sk-test" not in text


# -- timeouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_slow_answer_times_out(make: Make, protocol: Protocol, mode: str) -> None:
    _, provider = make(protocol, Step("slow", delay=STALL), **NO_DEFAULT_TIMEOUT)
    async with asyncio.timeout(HANG_TIMEOUT):
        with pytest.raises(ProviderError) as info:
            await run(provider, mode, budget=0.3)
    assert info.value.kind == "timeout"
    assert "0.3s" in info.value.message  # the attempt's budget is what ended it


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_times_out_on_a_slow_gap_between_deltas(
    make: Make, protocol: Protocol
) -> None:
    _, provider = make(protocol, stream_interval=STALL, **NO_DEFAULT_TIMEOUT)
    received: list[StreamChunk] = []
    async with asyncio.timeout(HANG_TIMEOUT):
        with pytest.raises(ProviderError) as info:
            await collect(provider.stream(REQUEST, attempt_timeout=0.3), received)
    assert info.value.kind == "timeout" and "0.3s" in info.value.message
    assert [c.text for c in received] == split_deltas(TEXT)[:1]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_timeout_bounds_each_gap_not_the_whole_stream(
    make: Make, protocol: Protocol, loop_clock: LoopClock
) -> None:
    budget = 30.0
    gap = 0.6 * budget
    consumed = threading.Semaphore(0)  # one release per delta the consumer has

    def before_delta(index: int) -> None:
        # Once the consumer has the previous delta, most of a budget passes on the loop's
        # clock before this one: every gap is under the budget, the whole stream far over it.
        if not consumed.acquire(timeout=HANG_TIMEOUT):
            raise AssertionError(f"delta {index - 1} was never consumed")
        loop_clock.advance(gap)

    _, provider = make(protocol, before_delta=before_delta, **NO_DEFAULT_TIMEOUT)
    texts: list[str] = []
    async for chunk in provider.stream(REQUEST, attempt_timeout=budget):
        if chunk.text:
            texts.append(chunk.text)
            consumed.release()
    assert "".join(texts) == TEXT
    assert gap * (len(texts) - 1) > 2 * budget  # the stream outlived two whole budgets


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_hang_gives_timeout_at_the_budget(make: Make, protocol: Protocol, mode: str) -> None:
    server, provider = make(protocol, Step("hang"), **NO_DEFAULT_TIMEOUT)
    async with asyncio.timeout(HANG_TIMEOUT):
        with pytest.raises(ProviderError) as info:
            await run(provider, mode, budget=0.2)
    assert info.value.kind == "timeout" and info.value.retryable
    assert "0.2s" in info.value.message
    assert len(server.requests) == 1


# -- broken connections and bodies --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_reset_before_the_response_is_a_connection_error(
    make: Make, protocol: Protocol, mode: str
) -> None:
    _, provider = make(protocol, Step("reset"))
    with pytest.raises(ProviderError) as info:
        await run(provider, mode)
    assert info.value.kind == "connection" and info.value.retryable


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_reset_mid_stream_raises_after_the_deltas_sent(
    make: Make, protocol: Protocol
) -> None:
    _, provider = make(protocol, Step("reset", reset_after=2))
    received: list[StreamChunk] = []
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream(REQUEST, attempt_timeout=HANG_TIMEOUT), received)
    assert info.value.kind == "connection"
    assert [c.text for c in received] == split_deltas(TEXT)[:2]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_reset_mid_body_is_a_connection_error(make: Make, protocol: Protocol) -> None:
    _, provider = make(protocol, Step("reset", reset_after=1))
    with pytest.raises(ProviderError) as info:
        await provider.complete(REQUEST, attempt_timeout=HANG_TIMEOUT)
    assert info.value.kind == "connection"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_malformed_json_is_malformed(make: Make, protocol: Protocol, mode: str) -> None:
    _, provider = make(protocol, Step("malformed"))
    with pytest.raises(ProviderError) as info:
        await run(provider, mode)
    assert info.value.kind == "malformed" and not info.value.retryable


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_json_of_the_wrong_shape_is_malformed(make: Make, protocol: Protocol) -> None:
    _, provider = make(protocol, Step("malformed", body=b'{"choices": 3, "content": 3}'))
    with pytest.raises(ProviderError) as info:
        await provider.complete(REQUEST, attempt_timeout=HANG_TIMEOUT)
    assert info.value.kind == "malformed"


async def test_openai_stream_that_ends_without_done_is_a_connection_error(make: Make) -> None:
    body = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
    _, provider = make("openai", Step("malformed", body=body))
    received: list[StreamChunk] = []
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream(REQUEST, attempt_timeout=HANG_TIMEOUT), received)
    assert info.value.kind == "connection" and [c.text for c in received] == ["Hi"]


async def test_anthropic_error_event_mid_stream_is_overloaded(make: Make) -> None:
    body = (
        b'event: message_start\ndata: {"type": "message_start", "message": {"id": "msg_1",'
        b' "type": "message", "role": "assistant", "model": "fake-model", "content": [],'
        b' "usage": {"input_tokens": 9, "output_tokens": 1}}}\n\n'
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0,'
        b' "delta": {"type": "text_delta", "text": "Partial"}}\n\n'
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error",'
        b' "message": "Overloaded"}}\n\n'
    )
    _, provider = make("anthropic", Step("malformed", body=body))
    received: list[StreamChunk] = []
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream(REQUEST, attempt_timeout=HANG_TIMEOUT), received)
    assert info.value.kind == "overloaded" and "Overloaded" in info.value.message
    assert [c.text for c in received] == ["Partial"]


async def test_unreachable_server_is_a_connection_error(make: Make) -> None:
    with FakeLLMServer("openai") as gone:
        url = gone.base_url
    _, provider = make("openai", base_url=url)
    for mode in MODES:
        with pytest.raises(ProviderError) as info:
            await run(provider, mode)
        assert info.value.kind == "connection"


async def test_a_closed_provider_refuses_calls(make: Make) -> None:
    _, provider = make("openai")
    await provider.aclose()
    with pytest.raises(ProviderError) as info:
        await provider.complete(REQUEST, attempt_timeout=1.0)
    assert info.value.kind == "connection"


# -- closing streams early ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_closing_a_stream_early_closes_the_upstream(make: Make, protocol: Protocol) -> None:
    text = " ".join(f"word{i}" for i in range(100))
    server, provider = make(protocol, Step(text=text), stream_interval=0.02)
    stream = provider.stream(REQUEST, attempt_timeout=HANG_TIMEOUT)
    first = await anext(stream)
    assert first.text == "word0"
    await stream.aclose()
    await eventually(lambda: server.disconnects == 1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_cancelling_the_consumer_closes_the_upstream(make: Make, protocol: Protocol) -> None:
    server, provider = make(protocol, Step("hang"))
    stream = provider.stream(REQUEST, attempt_timeout=30.0)
    task = asyncio.create_task(collect(stream, []))
    await eventually(lambda: server.requests)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: server.disconnects == 1)


async def test_a_finished_stream_is_not_a_disconnect(make: Make) -> None:
    server, provider = make("openai")
    await run(provider, "stream")
    await eventually(lambda: server.finished == 1, what="the server is done with the stream")
    assert server.disconnects == 0


# -- pure helpers -------------------------------------------------------------------------------


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after": date}, now=now) == 7.0
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after(httpx.Headers({"Retry-After": "3"})) == 3.0


async def test_retry_after_ms_from_the_server(make: Make) -> None:
    step = Step("status", status=429, headers={"retry-after-ms": "1500"})
    _, provider = make("openai", step)
    with pytest.raises(ProviderError) as info:
        await provider.complete(REQUEST, attempt_timeout=HANG_TIMEOUT)
    assert info.value.retry_after == 1.5


def test_redactor_removes_secrets_and_truncates() -> None:
    redact = Redactor(["hunter2-secret"])
    text = redact("key hunter2-secret and Bearer abc.def.ghi and sk-live-123456 " + "x" * 1000)
    assert "hunter2" not in text and "abc.def" not in text and "sk-live" not in text
    assert len(text) <= 300
    assert redact("use Bearer auth in the\nheader") == "use Bearer auth in the header"


async def test_openai_error_object_in_a_200_body_is_an_upstream_error(make: Make) -> None:
    body = b'{"error": {"message": "upstream model crashed", "type": "server_error"}}'
    _, provider = make("openai", Step("malformed", body=body))
    with pytest.raises(ProviderError) as info:
        await provider.complete(REQUEST, attempt_timeout=HANG_TIMEOUT)
    assert info.value.kind == "overloaded" and "upstream model crashed" in info.value.message
