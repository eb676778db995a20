"""Per-document caps through the HTTP API, the worker and the real parsers in their sandbox.

A document over a cap is not refused: it is cut at the cap, indexed, and the document says
what was cut (``warnings`` on ``GET /documents/{id}``). The files are generated here: a CSV of
200,000 columns (the shape of the 1.5 MB file that became 5,548 chunks and held a worker for
minutes), a CSV of many rows, and a long text.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ingestion.conftest import (
    Tenant,
    all_chunks,
    client_for,
    ingest_settings,
    new_tenant,
    upload_file,
    upload_text,
    wait_job,
)

MAX_CHUNKS = 8
MAX_CHARS = 20_000
MAX_ROWS = 100


def wide_csv(columns: int = 200_000, rows: int = 3) -> bytes:
    """A header and ``rows`` rows of ``columns`` one-digit cells (~0.4 MB a row)."""
    header = ",".join(str(i % 10) for i in range(columns))
    body = [",".join(str((i + r) % 10) for i in range(columns)) for r in range(rows)]
    return ("\n".join([header, *body]) + "\n").encode()


def long_csv(rows: int) -> bytes:
    return ("id,name\n" + "".join(f"{i},name{i}\n" for i in range(rows))).encode()


def long_text(paragraphs: int = 120) -> str:
    return "\n\n".join(
        f"Paragraph {i} talks about topic {i} at some length, " + "and then some more " * 12
        for i in range(paragraphs)
    )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = ingest_settings(tmp_path / "data", ingestion={
        "max_attempts": 1, "keywords_enabled": False, "max_chunks_per_document": MAX_CHUNKS,
        "max_parsed_chars": MAX_CHARS, "max_csv_rows": MAX_ROWS,
    })
    async with client_for(settings) as client:
        yield client


async def indexed(
    client: httpx.AsyncClient, tenant: Tenant, response: httpx.Response
) -> dict[str, Any]:
    """The accepted document, once its job has succeeded (``GET /documents/{id}``)."""
    assert response.status_code == 202, response.text
    accepted = response.json()
    job = await wait_job(client, tenant, accepted["job_id"])
    assert job["status"] == "succeeded", job
    got = await client.get(f"/api/v1/documents/{accepted['document_id']}",
                           headers=tenant.headers)
    assert got.status_code == 200, got.text
    document: dict[str, Any] = got.json()
    assert document["status"] == "ready" and document["searchable"] is True, document
    chunks = await all_chunks(client, tenant, document["id"])
    assert len(chunks) == document["chunk_count"] <= MAX_CHUNKS
    return document


async def test_a_csv_of_200k_columns_keeps_its_first_columns_and_says_so(
    client: httpx.AsyncClient,
) -> None:
    tenant = await new_tenant(client)
    data = wide_csv()
    assert len(data) > 1_000_000
    document = await indexed(
        client, tenant, await upload_file(client, tenant, "wide.csv", data, "text/csv")
    )
    # The default column cap (512) applies; the chunk cap, if it also cut, says so too.
    assert "only the first 512 of 200,000 columns were read" in document["warnings"]


async def test_a_long_text_is_cut_at_the_character_and_chunk_caps(
    client: httpx.AsyncClient,
) -> None:
    tenant = await new_tenant(client)
    text = long_text()
    assert len(text) > MAX_CHARS
    document = await indexed(client, tenant, await upload_text(client, tenant, "long", text))
    warnings = document["warnings"]
    read = re.fullmatch(r"only the first 20,000 of ([\d,]+) characters were read", warnings[0])
    assert read is not None and int(read[1].replace(",", "")) > MAX_CHARS, warnings
    match = re.fullmatch(
        r"only the first 8 of (\d+) chunks were indexed \(the text after character "
        r"([\d,]+) of 20,000 is not searchable\)", warnings[1],
    )
    assert match is not None and int(match[1]) > MAX_CHUNKS, warnings
    assert document["chunk_count"] == MAX_CHUNKS
    chunks = await all_chunks(client, tenant, document["id"])
    assert chunks[0]["text"].startswith("Paragraph 0 talks")


async def test_a_csv_of_many_rows_keeps_its_first_rows(client: httpx.AsyncClient) -> None:
    tenant = await new_tenant(client)
    document = await indexed(
        client, tenant, await upload_file(client, tenant, "rows.csv", long_csv(1000), "text/csv")
    )
    assert document["warnings"] == ["only the first 100 of 1,000 rows were read"]
    chunks = await all_chunks(client, tenant, document["id"])
    assert "name99" in chunks[-1]["text"] and "name100" not in chunks[-1]["text"]


async def test_a_document_within_the_caps_has_no_warning(client: httpx.AsyncClient) -> None:
    tenant = await new_tenant(client)
    document = await indexed(
        client, tenant, await upload_text(client, tenant, "short", long_text(3))
    )
    assert document["warnings"] == []
