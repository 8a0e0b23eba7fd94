"""Tests of snapshots and restores of the entry store, and of their commands."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cache_service.backup import (
    SnapshotWriter,
    read_snapshot,
    restore_snapshot,
    write_snapshot,
)
from cache_service.cache import SemanticCache
from cache_service.entries import LookupQuery, StoreCommand
from cache_service.errors import BackupError, StorageError
from cache_service.persistence import DATABASE_NAME, LOCK_NAME, SqliteEntryStore
from cache_service.scope import Scope
from cache_service.testing import FakeEmbedder, ManualClock, settings_for_tests

ACME = Scope(tenant="acme")


def _open_cache(
    data_dir: Path, embedder: FakeEmbedder, clock: ManualClock
) -> SemanticCache:
    store = SqliteEntryStore.open(data_dir, embedder.model_name, embedder.dimension)
    settings = settings_for_tests(data_dir=data_dir, max_entries=100_000)
    return SemanticCache(settings, embedder, clock=clock, entry_store=store)


def _store(cache: SemanticCache, query: str) -> int:
    outcome = cache.store(
        StoreCommand(
            query=query, scope=ACME, answer=f"re: {query}", finish_reason="stop"
        )
    )
    assert outcome.entry_id is not None
    return outcome.entry_id


def _ids(path: Path) -> list[int]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT entry_id FROM entries ORDER BY entry_id")
        return [row[0] for row in rows]
    finally:
        connection.close()


def test_snapshot_copies_entries_and_vectors(
    tmp_path: Path, fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    cache = _open_cache(tmp_path / "data", fake_embedder, clock)
    stored = [_store(cache, f"question {n}") for n in range(3)]

    info = write_snapshot(tmp_path / "data", tmp_path / "backups", clock)
    cache.close()

    assert info.path.parent == tmp_path / "backups"
    assert info.path.name.startswith("entries-")
    assert (info.entries, info.vectors) == (3, 3)
    assert info.size_bytes == info.path.stat().st_size
    assert info.created_at == clock()
    assert _ids(info.path) == stored
    assert [path.name for path in (tmp_path / "backups").iterdir()] == [info.path.name]
    assert read_snapshot(info.path).entries == 3


def test_snapshot_under_concurrent_stores_is_a_prefix(
    tmp_path: Path, fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    # Ids increase by one per store, so a consistent copy contains ids 1..k and
    # nothing else; a torn copy would show a gap or a half-written row.
    cache = _open_cache(tmp_path / "data", fake_embedder, clock)
    done = threading.Event()

    def write_until_done() -> None:
        number = 0
        while not done.is_set():
            _store(cache, f"burst question {number}")
            number += 1

    writer = threading.Thread(target=write_until_done)
    writer.start()
    try:
        snapshots = [
            write_snapshot(tmp_path / "data", tmp_path / "backups") for _ in range(5)
        ]
    finally:
        done.set()
        writer.join()
    cache.close()

    for info in snapshots:
        ids = _ids(info.path)
        assert ids == list(range(1, len(ids) + 1))
        assert info.entries == info.vectors == len(ids)


def test_snapshot_needs_data_dir_and_backup_dir(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="data_dir is empty"):
        SnapshotWriter(None, tmp_path).write()
    with pytest.raises(BackupError, match="backup_dir is empty"):
        SnapshotWriter(tmp_path, None).write()
    with pytest.raises(BackupError, match="no cache database"):
        SnapshotWriter(tmp_path / "nothing", tmp_path / "backups").write()


def test_restore_into_empty_folder_serves_entries(
    tmp_path: Path, fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    fake_embedder.set_similar("paraphrase", "original", 0.95)
    cache = _open_cache(tmp_path / "data", fake_embedder, clock)
    entry_id = _store(cache, "original")
    info = write_snapshot(tmp_path / "data", tmp_path / "backups")
    cache.close()

    outcome = restore_snapshot(info.path, tmp_path / "restored")
    restored = _open_cache(tmp_path / "restored", fake_embedder, clock)
    found = restored.lookup(LookupQuery(query="paraphrase", scope=ACME))

    assert (outcome.entries, outcome.vectors, outcome.replaced) == (1, 1, None)
    assert found.entry is not None
    assert found.entry.entry_id == entry_id


def test_restore_refuses_store_held_open(
    tmp_path: Path, fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    cache = _open_cache(tmp_path / "data", fake_embedder, clock)
    _store(cache, "question")
    info = write_snapshot(tmp_path / "data", tmp_path / "backups")

    with pytest.raises(BackupError, match="stop it, then restore"):
        restore_snapshot(info.path, tmp_path / "data", force=True)
    cache.close()


def test_service_cannot_open_store_during_restore(tmp_path: Path) -> None:
    # A restore holds the folder's lock file exclusively while it copies.
    (tmp_path / "data").mkdir()
    fd = os.open(tmp_path / "data" / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(StorageError, match="in use by another cache service"):
            SqliteEntryStore.open(tmp_path / "data", "fake-64", 64)
    finally:
        os.close(fd)


def test_restore_over_entries_needs_force(
    tmp_path: Path, fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    cache = _open_cache(tmp_path / "data", fake_embedder, clock)
    _store(cache, "kept in the snapshot")
    info = write_snapshot(tmp_path / "data", tmp_path / "backups")
    _store(cache, "stored after the snapshot")
    cache.close()

    with pytest.raises(BackupError, match="contains 2 entries; pass --force"):
        restore_snapshot(info.path, tmp_path / "data")
    outcome = restore_snapshot(info.path, tmp_path / "data", force=True, clock=clock)

    assert outcome.replaced is not None
    assert outcome.replaced.name.startswith(DATABASE_NAME + ".replaced-")
    assert _ids(outcome.replaced) == [1, 2]
    assert _ids(tmp_path / "data" / DATABASE_NAME) == [1]


def test_restore_never_reissues_later_ids(
    tmp_path: Path, fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    cache = _open_cache(tmp_path / "data", fake_embedder, clock)
    _store(cache, "first")
    info = write_snapshot(tmp_path / "data", tmp_path / "backups")
    lost = [_store(cache, f"lost {n}") for n in range(3)]
    cache.close()

    restore_snapshot(info.path, tmp_path / "data", force=True)
    reopened = _open_cache(tmp_path / "data", fake_embedder, clock)
    new_id = _store(reopened, "after the restore")
    reopened.close()

    assert new_id > max(lost)


def test_restore_rejects_file_that_is_not_a_snapshot(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database" * 100)
    other = tmp_path / "other.sqlite3"
    sqlite3.connect(other).execute("CREATE TABLE manifest (key TEXT, value TEXT)")

    with pytest.raises(BackupError, match="not a readable cache snapshot"):
        restore_snapshot(garbage, tmp_path / "data")
    with pytest.raises(BackupError, match="manifest lacks"):
        restore_snapshot(other, tmp_path / "data")
    with pytest.raises(BackupError, match="snapshot file not found"):
        restore_snapshot(tmp_path / "missing.sqlite3", tmp_path / "data")
    assert not (tmp_path / "data" / DATABASE_NAME).exists()


def _run_command(
    *args: str, data_dir: Path, backup_dir: Path
) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("QUERYGATE_")
    }
    env.update(
        QUERYGATE_CACHE_DATA_DIR=str(data_dir),
        QUERYGATE_CACHE_BACKUP_DIR=str(backup_dir),
    )
    return subprocess.run(
        [sys.executable, "-m", "cache_service", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_snapshot_and_restore_commands(
    tmp_path: Path, fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    cache = _open_cache(tmp_path / "data", fake_embedder, clock)
    _store(cache, "question")
    cache.close()
    backups = tmp_path / "backups"

    snapshot = _run_command("snapshot", data_dir=tmp_path / "data", backup_dir=backups)
    written = json.loads(snapshot.stdout)
    restored = _run_command(
        "restore", written["snapshot"], data_dir=tmp_path / "new", backup_dir=backups
    )
    refused = _run_command(
        "restore", written["snapshot"], data_dir=tmp_path / "new", backup_dir=backups
    )

    assert snapshot.returncode == 0, snapshot.stderr
    assert written["entries"] == 1
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["entries"] == 1
    assert refused.returncode == 1
    assert "restore failed:" in refused.stderr
    assert "pass --force" in refused.stderr
