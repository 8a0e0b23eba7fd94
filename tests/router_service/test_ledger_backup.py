"""Tests of cost ledger snapshots, restores, their commands and the write probe."""

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

from router_service.errors import BackupError, StorageError
from router_service.ledger import CostLedger, LedgerEntry
from router_service.ledger_backup import (
    LedgerSnapshotWriter,
    read_ledger_snapshot,
    restore_ledger,
    write_ledger_snapshot,
)

REPO = Path(__file__).resolve().parents[2]


def _entry(request_id: str) -> LedgerEntry:
    return LedgerEntry(
        created_at=1_700_000_000.0,
        request_id=request_id,
        tenant="acme",
        user="ada",
        tier="simple",
        model="simple-model",
        cache_status="miss",
        degraded=False,
        input_tokens=10,
        output_tokens=5,
        cost_usd=0.001,
        baseline_cost_usd=0.01,
        latency_ms=12.5,
    )


def _request_ids(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT request_id FROM requests ORDER BY rowid")
        return [row[0] for row in rows]
    finally:
        connection.close()


def test_snapshot_copies_every_row(tmp_path: Path) -> None:
    ledger = CostLedger(tmp_path / "ledger.sqlite3")
    for number in range(3):
        ledger.record(_entry(f"request-{number}"))

    info = LedgerSnapshotWriter(ledger, tmp_path / "backups").write()
    ledger.close()

    assert info.path.parent == tmp_path / "backups"
    assert info.path.name.startswith("ledger-")
    assert info.requests == 3
    assert _request_ids(info.path) == ["request-0", "request-1", "request-2"]
    assert read_ledger_snapshot(info.path).requests == 3


def test_snapshot_under_concurrent_writes_is_a_prefix(tmp_path: Path) -> None:
    # Rows are numbered in insertion order, so a consistent copy contains the first
    # k of them and nothing else.
    path = tmp_path / "ledger.sqlite3"
    ledger = CostLedger(path)
    done = threading.Event()

    def record_until_done() -> None:
        number = 0
        while not done.is_set():
            ledger.record(_entry(f"request-{number}"))
            number += 1

    writer = threading.Thread(target=record_until_done)
    writer.start()
    try:
        snapshots = [
            write_ledger_snapshot(path, tmp_path / "backups") for _ in range(5)
        ]
    finally:
        done.set()
        writer.join()
    ledger.close()

    for info in snapshots:
        ids = _request_ids(info.path)
        assert ids == [f"request-{number}" for number in range(len(ids))]
        assert info.requests == len(ids)


def test_snapshot_of_memory_ledger_is_rejected(tmp_path: Path) -> None:
    ledger = CostLedger(None)
    with pytest.raises(BackupError, match="the cost ledger is in memory"):
        LedgerSnapshotWriter(ledger, tmp_path).write()
    with pytest.raises(BackupError, match="backup_dir is empty"):
        LedgerSnapshotWriter(CostLedger(tmp_path / "l.sqlite3"), None).write()


def test_restore_refuses_ledger_held_open(tmp_path: Path) -> None:
    ledger = CostLedger(tmp_path / "ledger.sqlite3")
    ledger.record(_entry("request-0"))
    info = write_ledger_snapshot(tmp_path / "ledger.sqlite3", tmp_path / "backups")

    with pytest.raises(BackupError, match="stop every router that uses it"):
        restore_ledger(info.path, tmp_path / "ledger.sqlite3", force=True)
    ledger.close()


def test_router_cannot_open_ledger_during_restore(tmp_path: Path) -> None:
    # A restore holds the ledger's lock file exclusively while it copies.
    fd = os.open(tmp_path / "ledger.sqlite3.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(BackupError, match="a restore of the ledger"):
            CostLedger(tmp_path / "ledger.sqlite3")
    finally:
        os.close(fd)


def test_restore_over_rows_needs_force(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = CostLedger(path)
    ledger.record(_entry("in the snapshot"))
    info = write_ledger_snapshot(path, tmp_path / "backups")
    ledger.record(_entry("after the snapshot"))
    ledger.close()

    with pytest.raises(BackupError, match="contains 2 requests; pass --force"):
        restore_ledger(info.path, path)
    outcome = restore_ledger(info.path, path, force=True)
    reopened = CostLedger(path)
    savings = reopened.savings()
    reopened.close()

    assert outcome.requests == 1
    assert outcome.replaced is not None
    assert _request_ids(outcome.replaced) == ["in the snapshot", "after the snapshot"]
    assert _request_ids(path) == ["in the snapshot"]
    assert savings.requests == 1


def test_restore_rejects_damaged_snapshot(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database" * 100)

    with pytest.raises(BackupError, match="not a readable ledger snapshot"):
        restore_ledger(garbage, tmp_path / "ledger.sqlite3")
    with pytest.raises(BackupError, match="snapshot file not found"):
        restore_ledger(tmp_path / "missing.sqlite3", tmp_path / "ledger.sqlite3")
    assert not (tmp_path / "ledger.sqlite3").exists()


def test_write_probe_fails_on_locked_or_removed_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = CostLedger(path)
    ledger.check_writable(timeout_s=1.0)
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageError, match="database is locked"):
            ledger.check_writable(timeout_s=0.2)
    finally:
        blocker.rollback()
        blocker.close()
    ledger.check_writable(timeout_s=1.0)

    path.unlink()
    with pytest.raises(StorageError, match="removed while open"):
        ledger.check_writable(timeout_s=1.0)
    ledger.close()

    assert not path.exists()


def _run_command(*args: str, ledger: Path) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("QUERYGATE_")
    }
    env["QUERYGATE_ROUTER_LEDGER_PATH"] = str(ledger)
    return subprocess.run(
        [sys.executable, "-m", "router_service", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_snapshot_and_restore_commands(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = CostLedger(path)
    ledger.record(_entry("request-0"))
    ledger.close()

    snapshot = _run_command(
        "snapshot", "--output-dir", str(tmp_path / "backups"), ledger=path
    )
    written = json.loads(snapshot.stdout)
    restored = _run_command(
        "restore", written["snapshot"], ledger=tmp_path / "new.sqlite3"
    )
    refused = _run_command(
        "restore", written["snapshot"], ledger=tmp_path / "new.sqlite3"
    )

    assert snapshot.returncode == 0, snapshot.stderr
    assert written["requests"] == 1
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["requests"] == 1
    assert refused.returncode == 1
    assert "restore failed:" in refused.stderr
    assert "pass --force" in refused.stderr
