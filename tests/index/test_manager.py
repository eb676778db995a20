"""The index manager keeps the derived partitions in step with the SQL change log: replay
after a crash between the SQL commit and the index write, rebuild, verify, and the CLI."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
from typer.testing import CliRunner

from ragd.app import create_app
from ragd.cli import app as cli_app
from ragd.container import open_services
from ragd.index.manager import IndexManager
from ragd.settings import Settings
from tests.conftest import TEST_SECRET
from tests.ingestion.conftest import Tenant, ingest_settings, new_tenant, upload_text, wait_job

TEXTS = {
    "harbour": "Cranes unload containers in the harbour at dawn. The pilots guide ships.",
    "glacier": "Glaciers carve fjords over millennia. Meltwater feeds the rivers below.",
    "volcano": "Basalt flows from the volcano cool into hexagonal columns by the sea.",
}


async def _ingest(settings: Settings) -> tuple[Tenant, dict[str, str]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://ragd.test",
                                     timeout=120) as client:
            tenant = await new_tenant(client)
            ids = {}
            for title, text in TEXTS.items():
                r = await upload_text(client, tenant, title, text)
                assert r.status_code == 202, r.text
                job = await wait_job(client, tenant, r.json()["job_id"])
                assert job["status"] == "succeeded", job
                ids[title] = r.json()["document_id"]
    return tenant, ids


async def test_changes_committed_without_index_write_are_replayed(tmp_path: Path) -> None:
    settings = ingest_settings(tmp_path / "data")
    tenant, ids = await _ingest(settings)
    # Simulate a crash right after the SQL commit: delete a document in SQL only (the
    # catalog appends the delete changes; nobody applies them).
    async with open_services(settings) as services:
        assert await services.catalog.delete_document(tenant.tenant_id, ids["glacier"])
    async with open_services(settings) as services:
        # A fresh manager (a restarted process) sees the partitions behind the log.
        manager = IndexManager(services.catalog, settings.data_dir / "indexes")
        before = await manager.verify(tenant.tenant_id)
        assert not before.ok
        assert before.lexical_orphans > 0 and before.vector_orphans > 0
        assert before.lexical_applied < before.last_change
        applied = await manager.sync_all()
        assert applied > 0
        after = await manager.verify(tenant.tenant_id)
        assert after.ok, after
        assert after.chunks == before.chunks
        # Search no longer finds the deleted document's words.
        parts = await manager.ensure_fresh(tenant.tenant_id)
        hits = parts.lexical.search("glaciers fjords harbour", 10)
        stored = await services.catalog.chunks_by_keys(tenant.tenant_id, [h.key for h in hits])
        assert [chunk.document_id for chunk in stored] == [ids["harbour"]]
        manager.close()


def test_rebuild_restores_deleted_partitions_and_cli_verify(tmp_path: Path) -> None:
    settings = ingest_settings(tmp_path / "data")
    tenant, ids = asyncio.run(_ingest(settings))
    shutil.rmtree(settings.data_dir / "indexes" / tenant.tenant_id)
    runner = CliRunner()
    env = {"RAGD_JWT_SECRET": TEST_SECRET, "RAGD_MODELS__CACHE_DIR": str(
        settings.models.cache_dir)}
    args = ["--data-dir", str(settings.data_dir), "--tenant", tenant.tenant_id]
    result = runner.invoke(cli_app, ["index", "verify", *args, "--json"], env=env)
    assert result.exit_code == 1, result.output
    assert '"ok": false' in result.output
    result = runner.invoke(cli_app, ["index", "rebuild", *args], env=env)
    assert result.exit_code == 0, result.output
    assert "rebuilt with" in result.output
    result = runner.invoke(cli_app, ["index", "verify", *args], env=env)
    assert result.exit_code == 0, result.output
    assert " ok " in result.output
    asyncio.run(_search_finds(settings, tenant, ids["volcano"]))


async def _search_finds(settings: Settings, tenant: Tenant, document_id: str) -> None:
    async with open_services(settings) as services:
        parts = await services.indexes.ensure_fresh(tenant.tenant_id)
        hits = parts.lexical.search("basalt columns", 3)
        stored = await services.catalog.chunks_by_keys(tenant.tenant_id, [h.key for h in hits])
        assert stored and stored[0].document_id == document_id
        assert parts.vectors.count() == parts.lexical.count() == len(TEXTS)


def test_cli_index_rejects_unknown_tenant(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli_app,
        ["index", "verify", "--data-dir", str(tmp_path / "data"), "--tenant", "nope"],
        env={"RAGD_JWT_SECRET": TEST_SECRET},
    )
    assert result.exit_code == 2, result.output
    assert "no tenant" in result.output
