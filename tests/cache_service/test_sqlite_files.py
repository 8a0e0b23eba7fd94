"""Tests of the SQLite snapshot and restore steps both services' backups share."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from cache_service.sqlite_files import (
    exclusive_lock,
    lock_file,
    move_aside,
    replace_database,
    snapshot_database,
    utc_stamp,
)

# 2026-12-04 20:15:00 UTC
MOMENT = 1796415300.0


def _database(path: Path, rows: int) -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x INTEGER)")
        connection.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(rows)])
    connection.close()
    return path


def _count(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        (rows,) = connection.execute("SELECT COUNT(*) FROM t").fetchone()
    finally:
        connection.close()
    return int(rows)


def test_utc_stamp_format() -> None:
    assert utc_stamp(MOMENT) == "20261204T201500Z"


def test_snapshot_names_and_inspects_copy(tmp_path: Path) -> None:
    source = _database(tmp_path / "db.sqlite3", rows=3)
    backups = tmp_path / "backups"

    final, rows = snapshot_database(source, backups, "db-", MOMENT, _count)

    assert rows == 3
    assert final.parent == backups
    assert final.name.startswith("db-20261204T201500Z-")
    assert final.suffix == ".sqlite3"
    assert _count(final) == 3
    assert [path.name for path in backups.iterdir()] == [final.name]


def test_failed_snapshot_leaves_no_file(tmp_path: Path) -> None:
    source = _database(tmp_path / "db.sqlite3", rows=1)
    backups = tmp_path / "backups"

    def broken(path: Path) -> int:
        raise sqlite3.DatabaseError("broken copy")

    with pytest.raises(sqlite3.DatabaseError, match="broken copy"):
        snapshot_database(source, backups, "db-", MOMENT, broken)
    assert list(backups.iterdir()) == []


def test_replace_installs_prepared_copy(tmp_path: Path) -> None:
    snapshot = _database(tmp_path / "snapshot.sqlite3", rows=2)
    target = _database(tmp_path / "live.sqlite3", rows=5)

    def add_row(path: Path) -> None:
        with sqlite3.connect(path) as connection:
            connection.execute("INSERT INTO t VALUES (99)")
        connection.close()

    replace_database(snapshot, target, add_row)

    assert _count(target) == 3
    assert _count(snapshot) == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "live.sqlite3",
        "snapshot.sqlite3",
    ]


def test_failed_replace_keeps_target(tmp_path: Path) -> None:
    snapshot = _database(tmp_path / "snapshot.sqlite3", rows=2)
    target = _database(tmp_path / "live.sqlite3", rows=5)

    def broken(path: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_database(snapshot, target, broken)
    assert _count(target) == 5
    assert not target.with_name(".live.sqlite3.restoring").exists()


def test_move_aside_drops_wal_files(tmp_path: Path) -> None:
    target = _database(tmp_path / "live.sqlite3", rows=1)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"live.sqlite3{suffix}").write_bytes(b"")

    moved = move_aside(target, MOMENT)

    assert moved.name == "live.sqlite3.replaced-20261204T201500Z"
    assert _count(moved) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == [moved.name]


def test_held_lock_raises_given_error(tmp_path: Path) -> None:
    lock = tmp_path / "db.lock"
    holder = lock_file(lock, exclusive=False)
    try:
        with (
            pytest.raises(LookupError, match="in use"),
            exclusive_lock(lock, LookupError("in use")),
        ):
            pass
    finally:
        os.close(holder)

    with exclusive_lock(lock, LookupError("in use")):
        pass


def test_snapshot_path_is_absolute_for_relative_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _database(tmp_path / "db.sqlite3", rows=1)
    monkeypatch.chdir(tmp_path)

    final, _ = snapshot_database(source, Path("backups"), "db-", MOMENT, _count)

    assert final.is_absolute()
    assert final.parent == tmp_path / "backups"
