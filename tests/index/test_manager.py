"""The index manager keeps the derived partitions in step with the SQL change log: replay
after a crash between the SQL commit and the index write, rebuild, verify, and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

import ragd.container as container_module
import ragd.index.manager as manager_module
from ragd.app import create_app
from ragd.cli import app as cli_app
from ragd.container import open_services
from ragd.index.base import read_applied_seq
from ragd.index.manager import IndexManager
from ragd.index.vectors import UsearchPartition
from ragd.settings import Settings
from ragd.stores.catalog import Change, IndexEntry
from tests.conftest import TEST_SECRET
from tests.index.test_vectors import strip_section_flags
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


def _cli(settings: Settings, *args: str) -> Result:
    env = {"RAGD_JWT_SECRET": TEST_SECRET,
           "RAGD_MODELS__CACHE_DIR": str(settings.models.cache_dir)}
    return CliRunner().invoke(
        cli_app, [*args, "--data-dir", str(settings.data_dir)], env=env
    )


def _reports(result: Result) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = json.loads(result.stdout)
    return reports


async def _tenant_name(settings: Settings, tenant_id: str) -> str:
    async with open_services(settings) as services:
        found = await services.store.get_tenant(tenant_id)
        assert found is not None
        return found.name


def test_deleted_partitions_are_pending_a_lost_entry_is_broken_and_rebuild_repairs(
    tmp_path: Path,
) -> None:
    settings = ingest_settings(tmp_path / "data")
    tenant, ids = asyncio.run(_ingest(settings))
    name = asyncio.run(_tenant_name(settings, tenant.tenant_id))
    in_step = _cli(settings, "index", "verify", "--json")
    assert in_step.exit_code == 0, in_step.output
    assert [(r["tenant_name"], r["tenant_id"], r["state"]) for r in _reports(in_step)] == [
        (name, tenant.tenant_id, "ok")
    ]

    # Partitions deleted: the whole change log is after their (absent) marks, so the next
    # sync replays everything: behind, not broken.
    shutil.rmtree(settings.data_dir / "indexes" / tenant.tenant_id)
    behind = _cli(settings, "index", "verify", "--tenant", name, "--json")
    assert behind.exit_code == 0, behind.output
    [report] = _reports(behind)
    assert report["state"] == "pending" and not report["ok"]
    assert report["vector_missing"] == report["vector_pending"] == len(TEXTS)
    assert report["lexical_missing"] == report["lexical_pending"] == len(TEXTS)
    assert "nothing to repair" in behind.stderr and "NEEDS REPAIR" not in behind.stderr
    asyncio.run(_search_finds(settings, tenant, ids["volcano"]))  # a start replays it

    # An entry lost behind the log's back: the saved vectors lack a chunk that no change
    # after their mark brings back.
    vectors = settings.data_dir / "indexes" / tenant.tenant_id / "vectors"
    partition = UsearchPartition(vectors)
    lost = min(partition.keys())
    partition.delete({lost})
    partition.commit(partition.applied_seq)
    partition.close()
    broken = _cli(settings, "index", "verify", "--tenant", tenant.tenant_id)
    assert broken.exit_code == 1, broken.output
    assert f"{name} ({tenant.tenant_id})  broken" in broken.stdout
    assert "missing(lexical=0, vectors=1)" in broken.stdout
    assert "pending(lexical=0, vectors=0)" in broken.stdout
    assert "NEEDS REPAIR" in broken.stderr and "ragd index rebuild" in broken.stderr

    rebuilt = _cli(settings, "index", "rebuild", "--tenant", name)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert f"{name} ({tenant.tenant_id})  rebuilt with {len(TEXTS)} entries" in rebuilt.output
    fine = _cli(settings, "index", "verify")
    assert fine.exit_code == 0, fine.output
    assert f"{name} ({tenant.tenant_id})  ok " in fine.stdout
    asyncio.run(_search_finds(settings, tenant, ids["volcano"]))


async def test_vectors_not_saved_yet_during_ingestion_are_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running server saves its vectors at most every 30 s: a verify from another process
    meanwhile finds the saved partition missing the chunks committed since, all of them in
    the change log after its mark: pending, exit 0. (The checkpoint interval is lengthened
    so the test does not depend on how fast this machine ingests.)"""
    monkeypatch.setattr(manager_module, "VECTOR_CHECKPOINT_SECONDS", 3600.0)
    monkeypatch.setattr(container_module, "INDEX_CHECKPOINT_SECONDS", 3600.0)
    settings = ingest_settings(tmp_path / "data")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://ragd.test",
                                     timeout=120) as client:
            tenant = await new_tenant(client)
            for title, text in TEXTS.items():
                r = await upload_text(client, tenant, title, text)
                assert r.status_code == 202, r.text
                job = await wait_job(client, tenant, r.json()["job_id"])
                assert job["status"] == "succeeded", job
        result = await _verify_in_another_process(settings)
        assert result.returncode == 0, result.stdout + result.stderr
        [report] = json.loads(result.stdout)
        assert report["tenant_id"] == tenant.tenant_id
        assert report["tenant_name"] == await _tenant_name_of(app, tenant.tenant_id)
        assert report["state"] == "pending", report
        assert report["vector_missing"] == report["vector_pending"] == len(TEXTS)
        assert report["vector_applied"] < report["last_change"]
        assert report["lexical_missing"] == report["lexical_orphans"] == 0
        assert "nothing to repair" in result.stderr
    # Shutdown saved the vectors.
    after = await _verify_in_another_process(settings)
    assert after.returncode == 0, after.stdout + after.stderr
    assert json.loads(after.stdout)[0]["state"] == "ok"


async def _verify_in_another_process(settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAGD_JWT_SECRET": TEST_SECRET,
           "RAGD_MODELS__CACHE_DIR": str(settings.models.cache_dir)}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ragd", "index", "verify", "--json",
         "--data-dir", str(settings.data_dir)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )


async def _tenant_name_of(app: Any, tenant_id: str) -> str:
    found = await app.state.services.store.get_tenant(tenant_id)
    assert found is not None
    return str(found.name)


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


# -- several processes on one data dir ------------------------------------------------------


class ChangeLog:
    """The catalog's index-facing side (all the manager reads) over plain lists."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.changes: list[Change] = []
        self.entries: dict[int, IndexEntry] = {}
        self.asked: list[list[int]] = []  # the keys of each continuing() call

    def upsert(self, key: int, text: str, *, continues: bool = False) -> None:
        vector = np.zeros(4, dtype=np.float32)
        vector[key % 4] = 1.0
        self.entries[key] = IndexEntry(key, f"doc-{key}", "coll", text, vector, continues)
        self.changes.append(Change(len(self.changes) + 1, "upsert", key))

    async def continuing(self, tenant_id: str, keys: list[int]) -> set[int]:
        self.asked.append(list(keys))
        return {key for key in keys if key in self.entries and self.entries[key].continues}

    async def changes_after(self, tenant_id: str, after: int, limit: int) -> list[Change]:
        return [c for c in self.changes if c.seq > after][:limit]

    async def index_entries(self, tenant_id: str, keys: list[int]) -> list[IndexEntry]:
        return [self.entries[key] for key in keys if key in self.entries]

    async def last_change(self, tenant_id: str) -> int:
        return self.changes[-1].seq if self.changes else 0

    async def tenants_with_changes(self) -> list[str]:
        return [self.tenant_id]

    async def chunk_keys(self, tenant_id: str, *, after: int, limit: int) -> list[int]:
        return sorted(key for key in self.entries if key > after)[:limit]


def _process(log: ChangeLog, root: Path) -> IndexManager:
    """One server process's manager: vectors saved only at a checkpoint or on close."""
    return IndexManager(  # type: ignore[arg-type]  # the fake is all the manager reads
        log, root, vector_factory=lambda path: UsearchPartition(path, checkpoint_seconds=3600)
    )


async def test_a_process_behind_never_saves_its_older_vectors_over_a_newer_save(
    tmp_path: Path,
) -> None:
    """Process A synced at change 2 and B at change 4; whatever order they save in (the
    periodic checkpoint, then shutdown), the saved vectors stay at change 4."""
    log = ChangeLog("tenant-a")
    root = tmp_path / "indexes"
    first, second = _process(log, root), _process(log, root)
    log.upsert(1, "harbour cranes")
    log.upsert(2, "glacier fjords")
    assert await first.sync("tenant-a") == 2
    log.upsert(3, "volcano basalt")
    log.upsert(4, "desert dunes")
    assert await second.sync("tenant-a") == 4
    await second.flush()
    await first.flush()  # a checkpoint of the process behind
    vectors = root / "tenant-a" / "vectors"
    assert read_applied_seq(vectors) == 4
    second.close()
    first.close()  # shutdown of the process behind
    assert read_applied_seq(vectors) == 4
    fresh = _process(log, root)
    report = await fresh.verify("tenant-a")
    assert report.ok, report
    assert report.vector_applied == 4
    fresh.close()


async def test_a_checkpoint_after_another_processes_save_keeps_this_process_fresh(
    tmp_path: Path,
) -> None:
    """A process whose unsaved vectors are newer than the saved ones still saves them, and
    one that adopted another's newer save still finds everything."""
    log = ChangeLog("tenant-a")
    root = tmp_path / "indexes"
    first, second = _process(log, root), _process(log, root)
    log.upsert(1, "harbour cranes")
    await first.sync("tenant-a")
    await first.flush()
    log.upsert(2, "glacier fjords")
    await second.sync("tenant-a")
    await first.flush()  # nothing newer here: B's later state is not overwritten
    await second.flush()
    assert read_applied_seq(root / "tenant-a" / "vectors") == 2
    log.upsert(3, "volcano basalt")
    await first.sync("tenant-a")
    await first.flush()
    assert read_applied_seq(root / "tenant-a" / "vectors") == 3
    parts = await first.ensure_fresh("tenant-a")
    assert parts.vectors.keys() == {1, 2, 3}
    first.close()
    second.close()


# -- publish: background, coalesced syncs ----------------------------------------------------


class CountingLexical:
    """A tantivy partition that counts its commits with changes, and can hold the first one
    until released (so publishes pile up behind a running sync)."""

    def __init__(self, path: Path, gate: asyncio.Event | None, entered: asyncio.Event,
                 loop: asyncio.AbstractEventLoop, commits: list[int]) -> None:
        from ragd.index.lexical import TantivyPartition

        self._inner = TantivyPartition(path)
        self._gate = gate
        self._entered = entered
        self._loop = loop
        self._commits = commits

    def commit(self, applied_seq: int) -> None:
        if self._gate is not None:
            self._loop.call_soon_threadsafe(self._entered.set)
            asyncio.run_coroutine_threadsafe(self._gate.wait(), self._loop).result()
            self._gate = None
        self._commits.append(applied_seq)
        self._inner.commit(applied_seq)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


async def test_publishes_during_a_sync_are_applied_together_by_one_more_sync(
    tmp_path: Path,
) -> None:
    log = ChangeLog("tenant-a")
    gate, entered = asyncio.Event(), asyncio.Event()
    commits: list[int] = []
    loop = asyncio.get_running_loop()
    manager = IndexManager(  # type: ignore[arg-type]  # the fake is all the manager reads
        log, tmp_path / "indexes",
        lexical_factory=lambda path: CountingLexical(  # type: ignore[arg-type,return-value]
            path, gate, entered, loop, commits),
    )
    log.upsert(1, "harbour cranes")
    assert await manager.publish("tenant-a") == 0  # returns before the index is written
    await entered.wait()
    # The first sync is held in its commit; ten more documents commit and publish meanwhile.
    for key in range(2, 12):
        log.upsert(key, f"document number {key} glacier")
        await manager.publish("tenant-a")
    gate.set()
    await manager.settle()
    # The first sync applied change 1; every later one went into one more commit.
    assert commits == [1, 11]
    hits = await manager.lexical_search("tenant-a", "glacier", 20)
    assert sorted(hit.key for hit in hits) == list(range(2, 12))
    manager.close()


async def test_a_search_right_after_publish_sees_the_document(tmp_path: Path) -> None:
    """The background sync has not run yet: the search leg syncs first."""
    log = ChangeLog("tenant-a")
    manager = _process(log, tmp_path / "indexes")
    log.upsert(1, "harbour cranes")
    await manager.publish("tenant-a")
    hits = await manager.lexical_search("tenant-a", "cranes", 5)
    assert [hit.key for hit in hits] == [1]
    await manager.settle()
    manager.close()


async def test_a_search_during_a_background_sync_waits_for_it(tmp_path: Path) -> None:
    """The publish's sync has started (and cleared the dirty mark) but not applied yet: a
    search must not read the partitions before it finishes."""
    log = ChangeLog("tenant-a")
    gate, entered = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    manager = IndexManager(  # type: ignore[arg-type]  # the fake is all the manager reads
        log, tmp_path / "indexes",
        lexical_factory=lambda path: CountingLexical(  # type: ignore[arg-type,return-value]
            path, gate, entered, loop, []),
    )
    log.upsert(1, "harbour cranes")
    await manager.publish("tenant-a")
    await entered.wait()  # the sync is inside its commit
    search = asyncio.create_task(manager.lexical_search("tenant-a", "cranes", 5))
    gate.set()
    assert [hit.key for hit in await search] == [1]
    await manager.settle()
    manager.close()


async def test_continuing_is_answered_from_memory_and_old_partitions_restore_their_flags(
    tmp_path: Path,
) -> None:
    """Search asks which hits continue their section on every request: the vector partition
    answers from memory. A partition saved before the flags were kept asks the chunk rows
    (right, if slower) while it reads its flags from them once, in the background; from then
    on it answers from memory, and its next save keeps them."""
    log = ChangeLog("tenant-a")
    root = tmp_path / "indexes"
    manager = IndexManager(log, root)  # type: ignore[arg-type]  # the fake is all it reads
    for key in range(1, 6):
        log.upsert(key, f"harbour part {key}", continues=key in (2, 3))
    await manager.publish("tenant-a")
    await manager.settle()
    assert await manager.continuing("tenant-a", [1, 2, 3, 4, 9]) == {2, 3}
    assert log.asked == []
    manager.close()
    strip_section_flags(root / "tenant-a" / "vectors")

    reopened = IndexManager(log, root)  # type: ignore[arg-type]
    assert await reopened.continuing("tenant-a", [1, 2, 3, 4]) == {2, 3}
    assert log.asked[0] == [1, 2, 3, 4]  # this search asked the rows
    await reopened.settle()  # the background read of every entry's flag
    assert sorted(key for batch in log.asked[1:] for key in batch) == [1, 2, 3, 4, 5]
    asked = len(log.asked)
    assert await reopened.continuing("tenant-a", [1, 2, 3, 4, 5]) == {2, 3}
    assert len(log.asked) == asked  # from memory now
    # The next save (here: a new entry's) writes the flags with the partition.
    log.upsert(6, "harbour part 6", continues=True)
    await reopened.publish("tenant-a")
    await reopened.settle()
    reopened.close()
    again = IndexManager(log, root)  # type: ignore[arg-type]
    assert await again.continuing("tenant-a", [1, 2, 3, 6]) == {2, 3, 6}
    assert len(log.asked) == asked
    again.close()
