"""Hostile values into every parameter of every route of a real ``ragd serve``.

Each request puts one hostile value into one slot (a path or query parameter, a top-level
field of a JSON or form body, the whole body, a header) of an operation read from the
server's own OpenAPI schema, the other slots holding ordinary values. Classes: datetimes
with no UTC value or far outside any column's range, integers and floats beyond every
bound, deep nesting, NUL characters, unpaired surrogates, control characters, huge strings.
Whatever the slot, the answer is a 2xx or a 4xx with the stable error body and a request
id: never a 5xx, never a reset connection.

One test walks every (slot, canonical value) pair; a Hypothesis property draws further
values of each class into random slots.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.live import LiveServer
from tests.waiting import HANG_TIMEOUT

pytestmark = pytest.mark.slow

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
DEEP = 5000


class Raw(str):
    """A value already encoded for its slot: a JSON text, or percent-encoded URL text."""


# -- the hostile classes ------------------------------------------------------------------------

HOSTILE_JSON: list[Any] = [
    "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+14:00", "+275760-09-13T00:00:00Z",
    10**30, -(10**30), 2**63, -(2**63) - 1, 1e308, -1e-308, 0.5,
    Raw("NaN"), Raw("Infinity"), Raw("1e999"), Raw("9" * 5000),
    Raw("[" * DEEP + "]" * DEEP), Raw('{"a":' * 40 + "1" + "}" * 40),
    "a\x00b", "\ud800", "x\udfff", "\x1b[31m\r\n\u2028", "\x85\x9f",
    "x" * 300_000, "", " ", [], {}, None, True, [None] * 5000,
    {"$gt": "", "__proto__": {"admin": True}},
]
HOSTILE_HEADERS: list[str] = [
    "9999-12-31T23:59:59-01:00", "a\x00b", "\ud800", "\x1b[31m\x85", "Bearer " + "x" * 7000,
    "Bearer \udcff", str(10**30), "",
]
HOSTILE_TEXT: list[str] = [
    "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+14:00", str(10**30), "-1",
    "1e308", "NaN", "%00", "a%00b", "%ED%A0%80", "%FF%FE", "%1B%5B31m%0D%0A", "%C2%85",
    "..%2F..%2Fetc%2Fpasswd", "x" * 5000, "%20", "",
]


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode()


#: Cursors are opaque base64: hostile contents are hidden inside them.
HOSTILE_CURSORS: list[str] = [
    _cursor("9999-12-31T23:59:59-01:00|x"), _cursor("0001-01-01T00:00:00+14:00|x"),
    _cursor("2026-01-01T00:00:00+00:00|\x00"), _cursor("2026-01-01T00:00:00|x"),
    _cursor("2026-01-01T00:00:00+00:00|" + "x" * 5000), _cursor("\ud800|\ud800"),
    "!!!", "=" * 100,
]


# -- slots ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    method: str
    path: str
    where: str  # path | query | json | json-body | form | header
    name: str

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.where}:{self.name}"


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return _resolve(node, spec)


def _slots(spec: dict[str, Any]) -> list[Slot]:
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            method = method.upper()
            for parameter in operation.get("parameters", []):
                found.append(Slot(method, path, parameter["in"], parameter["name"]))
            content = operation.get("requestBody", {}).get("content", {})
            for media, body in content.items():
                schema = _resolve(body.get("schema", {}), spec)
                kind = "json" if media == "application/json" else "form"
                for name in schema.get("properties", {}):
                    found.append(Slot(method, path, kind, name))
                if media == "application/json":
                    found.append(Slot(method, path, "json-body", "*"))
            for header in ("Authorization", "X-API-Key", "X-Request-ID", "Content-Type"):
                found.append(Slot(method, path, "header", header))
    return found


# -- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    base: str
    key: str = field(repr=False)
    collection_id: str
    document_id: str
    spec: dict[str, Any] = field(repr=False)


def _ordinary(name: str, target: Target) -> Any:
    """A plain value for a slot that is not the hostile one."""
    return {
        "collection_id": target.collection_id, "document_id": target.document_id,
        "email": f"{uuid.uuid4().hex[:8]}@acme.io", "password": "violet-harbour-trumpet-42",
        "text": "ordinary text", "query": "ordinary", "question": "ordinary?",
        "title": "Ordinary", "name": f"n-{uuid.uuid4().hex[:8]}", "tenant_name": "t",
        "model": "ragd", "input": "ordinary", "username": "nobody@acme.io",
        "refresh_token": "x", "messages": [{"role": "user", "content": "hi"}],
    }.get(name, "x")


def _path_value(slot: Slot, name: str, target: Target) -> str:
    if name == "collection_id":
        return target.collection_id
    if name == "document_id":
        return target.document_id
    return UNKNOWN_ID


def _json_text(value: Any) -> str:
    return str(value) if isinstance(value, Raw) else json.dumps(value)


def _request(target: Target, slot: Slot, value: Any) -> httpx.Request:
    """The request of ``slot`` with ``value`` in it (already chosen for the slot's kind)."""
    operation = target.spec["paths"][slot.path][slot.method.lower()]
    path = slot.path
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "path":
            continue
        name = parameter["name"]
        text = str(value) if (slot.where, slot.name) == ("path", name) else \
            quote(_path_value(slot, name, target), safe="")
        path = path.replace("{" + name + "}", text)
    query = ""
    if slot.where == "query":
        query = f"?{slot.name}={value}"
    headers = {"X-API-Key": target.key}
    content: bytes | None = None
    media = next(iter(operation.get("requestBody", {}).get("content", {})), None)
    if slot.where in ("json", "json-body"):
        media = "application/json"
    elif slot.where == "form":
        media = next(m for m in operation["requestBody"]["content"] if m != "application/json")
    if media == "application/json":
        schema = _resolve(operation["requestBody"]["content"][media]["schema"], target.spec)
        required = schema.get("required", [])
        if slot.where == "json-body":
            content = _json_text(value).encode("utf-8", "surrogatepass")
        else:
            fields = {name: _json_text(_ordinary(name, target)) for name in required}
            if slot.where == "json":
                fields[slot.name] = _json_text(value)
            content = ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items())
                       + "}").encode("utf-8", "surrogatepass")
    elif media == "multipart/form-data":
        content, headers["Content-Type"] = _multipart(slot, value, target)
    elif media == "application/x-www-form-urlencoded":
        fields = {"username": "nobody@acme.io", "password": "x"}
        text = "&".join(f"{k}={quote(v)}" for k, v in fields.items())
        if slot.where == "form":
            text += f"&{slot.name}={_form_text(value)}"
        content = text.encode()
        headers["Content-Type"] = media
    if media == "application/json":
        headers["Content-Type"] = "application/json"
    if slot.where == "header":
        raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()
                       if k.lower() != slot.name.lower()]
        raw_headers.append((slot.name.encode(), _header_bytes(value)))
        return httpx.Request(slot.method, target.base + path + query, headers=raw_headers,
                             content=content)
    return httpx.Request(slot.method, target.base + path + query, headers=headers,
                         content=content)


def _form_text(value: Any) -> str:
    text = value if isinstance(value, str) else _json_text(value)
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _header_bytes(value: Any) -> bytes:
    text = value if isinstance(value, str) else _json_text(value)
    # A field value is visible ASCII, spaces, tabs and any byte >= 0x80 (RFC 9110 5.5):
    # control bytes are not HTTP at all, and the server's parser refuses them before ragd
    # sees the request. Everything else (invalid UTF-8 included) is sent.
    data = text.encode("utf-8", "surrogatepass")
    kept = bytes(b for b in data if b >= 0x20 and b != 0x7F or b == 0x09)[:8000]
    return kept.strip(b" \t")  # a field value has no leading or trailing whitespace


def _multipart(slot: Slot, value: Any, target: Target) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts: dict[str, bytes] = {"collection_id": target.collection_id.encode(),
                               "title": b"Ordinary"}
    filename = b"notes.txt"
    file_body = b"ordinary file text"
    hostile = (value if isinstance(value, str) else _json_text(value)).encode(
        "utf-8", "surrogatepass")
    if slot.name == "file":
        file_body = hostile or b"x"
        filename = hostile[:300] + b".txt"
    elif slot.where == "form":
        parts[slot.name] = hostile
    chunks = []
    for name, data in parts.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                      .encode() + data + b"\r\n")
    chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="'
                  .encode() + filename.replace(b'"', b"") + b'"\r\n'
                  b"Content-Type: text/plain\r\n\r\n" + file_body + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _values_for(slot: Slot) -> list[Any]:
    if slot.where in ("path", "query"):
        values: list[Any] = list(HOSTILE_TEXT)
        if slot.name == "cursor":
            values += HOSTILE_CURSORS
        return values
    if slot.where == "header":
        return HOSTILE_HEADERS
    return list(HOSTILE_JSON)


def _check(client: httpx.Client, request: httpx.Request, what: str) -> None:
    try:
        response = client.send(request)
    except httpx.RemoteProtocolError as exc:  # the server dropped the connection
        raise AssertionError(f"{what}: connection reset ({exc})") from None
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    assert response.headers.get("x-request-id"), what
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, (what, body)
        assert isinstance(body["error"]["code"], str) and body["error"]["code"], (what, body)
        assert isinstance(body["error"]["message"], str), (what, body)


# -- fixtures and tests -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target(live: LiveServer) -> Iterator[Target]:
    with httpx.Client(base_url=live.base, timeout=HANG_TIMEOUT,
                      headers={"X-API-Key": live.ops_key}) as client:
        collection = client.post("/api/v1/collections", json={"name": "hostile"})
        assert collection.status_code == 201, collection.text
        document = client.post("/api/v1/documents", json={
            "collection_id": collection.json()["id"], "title": "Target",
            "text": "Hostile values must never reach a 500."})
        assert document.status_code == 202, document.text
        spec = client.get("/openapi.json").json()
    yield Target(base=live.base, key=live.ops_key, collection_id=collection.json()["id"],
                 document_id=document.json()["document_id"], spec=spec)


@pytest.fixture(scope="module")
def slots(target: Target) -> list[Slot]:
    return _slots(target.spec)


def test_every_slot_of_every_route_is_covered(slots: list[Slot], target: Target) -> None:
    operations = {(m.upper(), p) for p, ops in target.spec["paths"].items() for m in ops}
    assert {(s.method, s.path) for s in slots} == operations
    kinds = {s.where for s in slots}
    assert {"path", "query", "json", "json-body", "form", "header"} <= kinds


def test_each_hostile_value_in_each_slot(
    slots: list[Slot], target: Target, live: LiveServer
) -> None:
    with httpx.Client(timeout=HANG_TIMEOUT) as client:
        for slot in slots:
            if _destroys_the_credential(slot):
                continue
            for value in _values_for(slot):
                _check(client, _request(target, slot, value), f"{slot} <- {str(value)[:60]!r}")
    assert "unhandled error" not in live.log_text()


def _destroys_the_credential(slot: Slot) -> bool:
    # Ordinary values elsewhere in these requests would revoke what the test runs with.
    return slot.where == "header" and slot.path.endswith(("/logout", "/logout-all"))


def _datetimes() -> st.SearchStrategy[str]:
    offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(
        lambda minutes: f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:"
                        f"{abs(minutes) % 60:02d}")
    return st.builds(
        lambda year, rest, offset: f"{year:04d}-{rest}{offset}",
        st.sampled_from([1, 2, 1899, 1900, 9998, 9999]),
        st.sampled_from(["01-01T00:00:00", "12-31T23:59:59.999999"]), offsets,
    )


def _nested(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


HOSTILE = st.one_of(
    _datetimes(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=30, max_value=3000).map(_nested),
    st.text(alphabet=st.sampled_from(["a", "\x00", "\ud800", "\udfff", "\x1b", "\n", "\u2028",
                                      "\ufeff", "é", " "]), min_size=1, max_size=40),
    st.lists(st.integers(), max_size=300),
)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_hostile_values_in_random_slots(
    slots: list[Slot], target: Target, data: st.DataObject
) -> None:
    slot = data.draw(st.sampled_from([s for s in slots if not _destroys_the_credential(s)]))
    value = data.draw(HOSTILE)
    if slot.where in ("path", "query"):
        text = value if isinstance(value, str) else _json_text(value)
        value = quote(text.encode("utf-8", "surrogatepass"), safe="")
    with httpx.Client(timeout=HANG_TIMEOUT) as client:
        _check(client, _request(target, slot, value), f"{slot} <- {str(value)[:60]!r}")
