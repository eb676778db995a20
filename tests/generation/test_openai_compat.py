"""The OpenAI-compatible API (``/v1/chat/completions``, ``/v1/models``, ``/v1/embeddings``)
through the official ``openai`` client, unchanged, against a real uvicorn server of the app:
ragd access tokens and API keys as the SDK's ``api_key``, the ``ragd`` extension field,
streaming, collection models, errors as the SDK's exception classes, and client
disconnects closing the upstream provider request."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import STRONG_PASSWORD
from tests.generation.fakes import FakeLLMServer, Step
from tests.generation.serving import serving
from tests.ingestion.conftest import FINISHED, ingest_settings
from tests.waiting import eventually_sync

DOCS = {
    "volcano": "Basalt columns form when thick lava flows cool slowly and contract. "
               "The cracks meet at angles near 120 degrees, so the columns are mostly "
               "hexagonal. The Giant's Causeway in Northern Ireland is a famous example.",
    "glacier": "Glaciers carve U-shaped valleys and fjords over thousands of years. "
               "Meltwater from the ice sheet feeds the rivers below.",
    "harbour": "Harbour cranes unload shipping containers at dawn. The port authority "
               "schedules the berths a week ahead.",
}
#: Only in the tenant's second collection ("zoo").
UNIQUE = "quokkazorp"
ZOO_DOC = f"The {UNIQUE} is a small marsupial that lives on Rottnest Island and smiles a lot."
QUESTION = "Why are basalt columns hexagonal?"
EMBEDDING_DIM = 384
_names = itertools.count()


# -- setup over plain HTTP (sync httpx against the real server) ------------------------------


@dataclass
class Account:
    """A registered tenant admin: its access token and its collections by name."""

    token: str
    collections: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _register(http: httpx.Client) -> Account:
    n = next(_names)
    r = http.post("/api/v1/auth/register", json={
        "email": f"oai{n}@compat-{os.getpid()}.io", "password": STRONG_PASSWORD,
        "tenant_name": f"compat-{os.getpid()}-{n}",
    })
    assert r.status_code == 201, r.text
    return Account(token=r.json()["access_token"])


def _collection(http: httpx.Client, account: Account, name: str) -> str:
    r = http.post("/api/v1/collections", json={"name": name}, headers=account.headers)
    assert r.status_code == 201, r.text
    account.collections[name] = r.json()["id"]
    return account.collections[name]


def _ingest(http: httpx.Client, account: Account, collection: str, docs: dict[str, str]) -> None:
    jobs = []
    for title, text in docs.items():
        r = http.post("/api/v1/documents", headers=account.headers, json={
            "collection_id": account.collections[collection], "title": title, "text": text,
        })
        assert r.status_code == 202, r.text
        jobs.append(r.json()["job_id"])
    for job_id in jobs:

        def finished(job_id: str = job_id) -> dict[str, Any] | None:
            r = http.get(f"/api/v1/jobs/{job_id}", headers=account.headers)
            assert r.status_code == 200, r.text
            job: dict[str, Any] = r.json()
            return job if job["status"] in FINISHED else None

        job = eventually_sync(finished, what=f"job {job_id} finished")
        assert job["status"] == "succeeded", job


def _api_key(http: httpx.Client, account: Account) -> str:
    r = http.post("/api/v1/auth/api-keys", json={"name": "openai-sdk"},
                  headers=account.headers)
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


@dataclass
class Env:
    base_url: str
    a: Account  # collections "docs" (DOCS) and "zoo" (ZOO_DOC)
    b: Account  # another tenant: collection "private-b"
    fake: FakeLLMServer | None = None

    def client(self, api_key: str | None = None, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=api_key or self.a.token,
                             max_retries=0, timeout=60, **options)


def _setup(base_url: str, *, zoo: bool) -> tuple[Account, Account]:
    with httpx.Client(base_url=base_url, timeout=60) as http:
        a, b = _register(http), _register(http)
        _collection(http, a, "docs")
        _ingest(http, a, "docs", DOCS)
        if zoo:
            _collection(http, a, "zoo")
            _ingest(http, a, "zoo", {"quokka": ZOO_DOC})
        _collection(http, b, "private-b")
    return a, b


@pytest.fixture(scope="module")
def extractive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A server with no language model configured: the extractive provider answers."""
    data = tmp_path_factory.mktemp("oai-extractive")
    with serving(ingest_settings(data / "data")) as base_url:
        a, b = _setup(base_url, zoo=True)
        yield Env(base_url, a, b)


#: The fake's default: a slow stream (200 words, 50 ms apart) for the disconnect tests.
#: After its first word the upstream stalls until the client leaves: only ragd closing its
#: upstream request can end it (the provider's own timeout and the router's deadline are
#: set far past the 60 s the tests wait).
SLOW = Step(text=" ".join(["word"] * 200), gap=3600.0)


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A server whose provider is a fake OpenAI-protocol LLM (scripted per test)."""
    data = tmp_path_factory.mktemp("oai-llm")
    with FakeLLMServer("openai", default=SLOW) as fake:
        provider = {"name": "fake", "type": "openai", "model": "fake-model",
                    "base_url": fake.base_url, "api_key": "sk-test-secret-key",
                    "timeout_seconds": 600}
        settings = ingest_settings(data / "data",
                                   llm={"providers": [provider], "deadline_seconds": 3600})
        with serving(settings) as base_url:
            a, b = _setup(base_url, zoo=False)
            yield Env(base_url, a, b, fake)


# -- helpers ------------------------------------------------------------------------------


def _ragd(obj: Any) -> dict[str, Any]:
    """The ``ragd`` extension field as the SDK keeps it (a pydantic extra field)."""
    extra = obj.model_extra or {}
    assert "ragd" in extra, f"no ragd field on {obj!r}"
    value: dict[str, Any] = extra["ragd"]
    assert isinstance(value, dict)
    return value


def _assert_verified(ragd: dict[str, Any], content: str) -> None:
    """Every citation's quote is in its retrieved chunk; its marker is in the content."""
    texts = {block["chunk_id"]: block["text"] for block in ragd["retrieval"]["context"]}
    assert ragd["citations"], ragd
    for citation in ragd["citations"]:
        assert citation["quote"] and citation["quote"] in texts[citation["chunk_id"]]
        assert f"[{citation['n']}" in content


def _user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# -- chat completions -----------------------------------------------------------------------


def test_completion_with_extractive_provider_has_verified_citations(extractive: Env) -> None:
    with extractive.client() as client:
        completion = client.chat.completions.create(
            model="ragd", messages=[{"role": "system", "content": "Answer like a pirate."},
                                    *_user(QUESTION)],
        )
    assert completion.object == "chat.completion" and completion.model == "ragd"
    assert completion.id.startswith("chatcmpl-")
    [choice] = completion.choices
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    content = choice.message.content or ""
    assert "[1]" in content and "hexagonal" in content.lower()
    ragd = _ragd(completion)
    assert ragd["provider"] == "extractive" and ragd["grounded"] is True
    assert ragd["citations_dropped"] == 0
    assert ragd["citations"][0]["title"] == "volcano"
    _assert_verified(ragd, content)
    usage = completion.usage
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_completion_with_an_api_key(extractive: Env) -> None:
    with httpx.Client(base_url=extractive.base_url, timeout=30) as http:
        key = _api_key(http, extractive.a)
    with extractive.client(api_key=key) as client:
        completion = client.chat.completions.create(model="ragd", messages=_user(QUESTION))
        models = {m.id for m in client.models.list()}
    assert "[1]" in (completion.choices[0].message.content or "")
    assert _ragd(completion)["citations"]
    assert models == {"ragd", "ragd:docs", "ragd:zoo"}


def test_completion_from_llm_drops_the_invalid_marker(llm: Env) -> None:
    assert llm.fake is not None
    llm.fake.push(Step(text="Cooling lava contracts [1] into columns. Not real [9]."))
    with llm.client() as client:
        completion = client.chat.completions.create(model="ragd", messages=_user(QUESTION))
    content = completion.choices[0].message.content or ""
    assert "[1]" in content and "[9]" not in content
    assert completion.choices[0].finish_reason == "stop"
    ragd = _ragd(completion)
    assert ragd["provider"] == "fake" and ragd["model"] == "fake-model"
    assert [c["n"] for c in ragd["citations"]] == [1]
    assert ragd["citations_dropped"] == 1
    _assert_verified(ragd, content)
    assert completion.usage is not None
    # The client's question reached the provider inside ragd's own prompt.
    prompt = llm.fake.requests[-1].json
    assert prompt["messages"][0]["role"] == "system"
    assert QUESTION in prompt["messages"][-1]["content"]


def _stream(client: openai.OpenAI, **kwargs: Any) -> tuple[str, list[Any]]:
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_streaming_with_extractive_provider(extractive: Env) -> None:
    with extractive.client() as client:
        text, chunks = _stream(client, model="ragd", messages=_user(QUESTION))
        final = client.chat.completions.create(model="ragd", messages=_user(QUESTION))
    assert all(c.object == "chat.completion.chunk" and c.model == "ragd" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    ragd = _ragd(last)
    assert text and text == final.choices[0].message.content
    assert ragd["provider"] == "extractive" and ragd["citations_dropped"] == 0
    _assert_verified(ragd, text)
    assert last.usage is not None


def test_streaming_from_llm_drops_the_invalid_marker(llm: Env) -> None:
    assert llm.fake is not None
    llm.fake.push(Step(text="Cooling lava contracts [1] into columns. Not real [9]."))
    with llm.client() as client:
        text, chunks = _stream(client, model="ragd", messages=_user(QUESTION))
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    ragd = _ragd(last)
    assert "[1]" in text and "[9]" not in text
    assert ragd["provider"] == "fake" and ragd["citations_dropped"] == 1
    assert [c["n"] for c in ragd["citations"]] == [1]
    _assert_verified(ragd, text)


def test_collection_model_restricts_retrieval(extractive: Env) -> None:
    question = f"What is a {UNIQUE} and where does it live?"
    docs_id, zoo_id = extractive.a.collections["docs"], extractive.a.collections["zoo"]
    with extractive.client() as client:
        everywhere = client.chat.completions.create(model="ragd", messages=_user(question))
        zoo = client.chat.completions.create(model="ragd:zoo", messages=_user(question))
        docs = client.chat.completions.create(model="ragd:docs", messages=_user(question))
    # All collections, and the zoo alone, find the unique word...
    for completion in (everywhere, zoo):
        assert UNIQUE in (completion.choices[0].message.content or "")
    assert {h["collection_id"] for h in _ragd(zoo)["retrieval"]["results"]} == {zoo_id}
    assert zoo.model == "ragd:zoo"
    # ... the docs collection never sees it.
    hits = _ragd(docs)["retrieval"]["results"]
    assert all(h["collection_id"] == docs_id for h in hits)
    assert all(UNIQUE not in h["text"] for h in hits)
    assert UNIQUE not in (docs.choices[0].message.content or "")


def test_errors_are_the_sdk_exception_classes(extractive: Env) -> None:
    with extractive.client() as client:
        with pytest.raises(openai.NotFoundError) as not_found:
            client.chat.completions.create(model="ragd:no-such-collection",
                                           messages=_user(QUESTION))
        assert not_found.value.status_code == 404
        assert not_found.value.code == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o", messages=_user(QUESTION))
        # Another tenant's collection is not a model of this tenant.
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="ragd:private-b", messages=_user(QUESTION))
        with pytest.raises(openai.UnprocessableEntityError) as empty:
            client.chat.completions.create(model="ragd", messages=_user("   "))
        assert empty.value.status_code == 422 and empty.value.code == "empty_question"
        with pytest.raises(openai.UnprocessableEntityError):
            client.chat.completions.create(
                model="ragd", messages=[{"role": "system", "content": "no question"}])
        with pytest.raises(openai.UnprocessableEntityError):
            client.chat.completions.create(model="ragd", messages=[])
        with pytest.raises(openai.UnprocessableEntityError):
            client.embeddings.create(model="ragd", input=[""])
    with extractive.client(api_key="not-a-ragd-token") as client:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="ragd", messages=_user(QUESTION))
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
        with pytest.raises(openai.AuthenticationError):
            client.embeddings.create(model="ragd", input="a")
    # No Authorization header at all.
    with extractive.client() as client:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="ragd", messages=_user(QUESTION),
                                           extra_headers={"Authorization": openai.Omit()})


def test_models_list_the_tenants_collections(extractive: Env) -> None:
    with extractive.client() as client:
        models = list(client.models.list())
    assert {m.id for m in models} == {"ragd", "ragd:docs", "ragd:zoo"}
    assert all(m.object == "model" and m.owned_by == "ragd" for m in models)
    with extractive.client(api_key=extractive.b.token) as client:
        assert {m.id for m in client.models.list()} == {"ragd", "ragd:private-b"}


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_embeddings_base64_and_float(extractive: Env) -> None:
    with extractive.client() as client:
        default = client.embeddings.create(model="ragd", input=["a", "b"])  # base64 on the wire
        floats = client.embeddings.create(model="ragd", input=["a", "b"],
                                          encoding_format="float")
        single = client.embeddings.create(model="ragd", input="basalt columns")
    with extractive.client(api_key=extractive.b.token) as client:
        other = client.embeddings.create(model="ragd", input=["a", "b"])
    for response in (default, floats, other):
        assert [d.index for d in response.data] == [0, 1]
        for item in response.data:
            assert len(item.embedding) == EMBEDDING_DIM
            assert abs(_norm(item.embedding) - 1.0) < 1e-3
        assert response.usage.prompt_tokens > 0
        assert response.usage.total_tokens == response.usage.prompt_tokens
    for b64, flt in zip(default.data, floats.data, strict=True):
        assert max(abs(x - y) for x, y in zip(b64.embedding, flt.embedding, strict=True)) < 1e-6
    assert default.data[0].embedding != default.data[1].embedding
    assert len(single.data) == 1 and len(single.data[0].embedding) == EMBEDDING_DIM


def test_multi_turn_rewrites_the_follow_up(extractive: Env) -> None:
    with extractive.client() as client:
        first = client.chat.completions.create(model="ragd", messages=_user(QUESTION))
        follow = client.chat.completions.create(model="ragd", messages=[
            {"role": "system", "content": "You are helpful."},
            *_user(QUESTION),
            {"role": "assistant", "content": first.choices[0].message.content},
            *_user("And where is a famous example?"),
        ])
    ragd = _ragd(follow)
    search_query = ragd["retrieval"]["search_query"]
    assert search_query == "And where is a famous example (basalt columns hexagonal)?"
    assert "Causeway" in (follow.choices[0].message.content or "")
    # Without history the question is searched as it is.
    assert _ragd(first)["retrieval"]["search_query"] == QUESTION


# -- client disconnects close the upstream request (keep these last: they use SLOW) --------


def test_disconnect_from_chat_sse_closes_the_upstream(llm: Env) -> None:
    fake = llm.fake
    assert fake is not None
    before = fake.disconnects
    with httpx.Client(base_url=llm.base_url, timeout=30) as http:
        with http.stream("POST", "/api/v1/chat", headers=llm.a.headers,
                         json={"question": QUESTION, "stream": True}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line == "event: token":
                    break
            else:
                raise AssertionError("the stream ended without a token")
        # Leaving the block closed the response (and its connection) mid-stream.
    eventually_sync(lambda: fake.disconnects == before + 1,
                    what="ragd closes its upstream request")


def test_disconnect_from_openai_stream_closes_the_upstream(llm: Env) -> None:
    fake = llm.fake
    assert fake is not None
    before = fake.disconnects
    with llm.client() as client:
        stream = client.chat.completions.create(model="ragd", messages=_user(QUESTION),
                                                stream=True)
        seen = ""
        for chunk in stream:
            seen += chunk.choices[0].delta.content or ""
            if seen.strip():
                break
        stream.close()
        assert seen.strip().startswith("word")
        eventually_sync(lambda: fake.disconnects == before + 1,
                        what="ragd closes its upstream request")

