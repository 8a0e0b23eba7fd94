"""Snapshots of the cost ledger, and restoring one over the ledger file.

A snapshot is one SQLite file written with SQLite's online backup API from a
separate read connection, in one backup step, so it is one consistent state of
the ledger while routers keep recording requests.

Restore rule: no router may have the ledger open. A restore takes the ledger's
lock file exclusively and fails while any router holds it, with or without
``--force``. ``force`` is needed to replace a ledger that contains rows. The
replaced file is kept beside it as ``<name>.replaced-<UTC time>``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cache_service.sqlite_files import (
    connect_existing,
    exclusive_lock,
    move_aside,
    replace_database,
    snapshot_database,
)
from router_service.errors import BackupError
from router_service.ledger import CostLedger, lock_path

SNAPSHOT_PREFIX = "ledger-"


@dataclass(frozen=True)
class LedgerSnapshot:
    """A snapshot file and its number of request rows; ``created_at`` is Unix s."""

    path: Path
    requests: int
    size_bytes: int
    created_at: float


@dataclass(frozen=True)
class LedgerRestore:
    """Row count of a restored ledger, and the new path of the file it replaced."""

    requests: int
    replaced: Path | None


class LedgerSnapshotWriter:
    """Writes snapshots of a router's ledger into ``backup_dir``."""

    def __init__(
        self,
        ledger: CostLedger,
        backup_dir: Path | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._backup_dir = backup_dir
        self._clock = clock

    def write(self) -> LedgerSnapshot:
        """Write one snapshot and return its path and row count.

        Raises:
            BackupError: the ledger is in memory, ``backup_dir`` is not set, or
                the copy failed.
        """
        if self._ledger.path is None:
            raise BackupError(
                "the cost ledger is in memory ([ledger] path is empty), so there is "
                "no file to snapshot; set [ledger] path"
            )
        if self._backup_dir is None:
            raise BackupError(
                "[ledger] backup_dir is empty; set it to the snapshot folder"
            )
        return write_ledger_snapshot(self._ledger.path, self._backup_dir, self._clock)


def write_ledger_snapshot(
    ledger_path: Path, backup_dir: Path, clock: Callable[[], float] = time.time
) -> LedgerSnapshot:
    """Copy the ledger at ``ledger_path`` into a new file in ``backup_dir``.

    Safe while routers write to the ledger. The file appears under its final
    name only once it is complete.

    Raises:
        BackupError: the ledger file does not exist or the copy failed.
    """
    if not ledger_path.is_file():
        raise BackupError(
            f"no ledger file at {ledger_path}; check [ledger] path, or start the "
            "router once to create it"
        )
    created_at = clock()
    try:
        final, requests = snapshot_database(
            ledger_path, backup_dir, SNAPSHOT_PREFIX, created_at, _count_requests
        )
    except (OSError, sqlite3.Error) as error:
        raise BackupError(f"snapshot of the ledger failed: {error}") from error
    return LedgerSnapshot(final, requests, final.stat().st_size, created_at)


def read_ledger_snapshot(path: Path) -> LedgerSnapshot:
    """Check that ``path`` is an intact ledger snapshot and return its row count.

    Raises:
        BackupError: the file is missing, damaged, or has no ``requests`` table.
    """
    if not path.is_file():
        raise BackupError(f"snapshot file not found: {path}")
    try:
        with connect_existing(path, "ro") as connection:
            (verdict,) = connection.execute("PRAGMA integrity_check").fetchone()
        requests = _count_requests(path)
    except sqlite3.Error as error:
        raise BackupError(
            f"{path} is not a readable ledger snapshot: {error}"
        ) from error
    if verdict != "ok":
        raise BackupError(f"{path} failed SQLite's integrity check: {verdict}")
    stat = path.stat()
    return LedgerSnapshot(path, requests, stat.st_size, stat.st_mtime)


def restore_ledger(
    snapshot: Path,
    ledger_path: Path,
    *,
    force: bool = False,
    clock: Callable[[], float] = time.time,
) -> LedgerRestore:
    """Make the snapshot the ledger at ``ledger_path``; no router may have it open.

    Raises:
        BackupError: the snapshot is invalid, a router has the ledger open, or
            the ledger contains rows and ``force`` is false.
    """
    info = read_ledger_snapshot(snapshot)
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(ledger_path):
        replaced = _set_aside(ledger_path, force, clock)
        try:
            replace_database(snapshot, ledger_path)
        except (OSError, sqlite3.Error) as error:
            raise BackupError(f"restore of {ledger_path} failed: {error}") from error
    return LedgerRestore(info.requests, replaced)


def _set_aside(target: Path, force: bool, clock: Callable[[], float]) -> Path | None:
    if not target.exists():
        return None
    try:
        with connect_existing(target, "rw") as current:
            # Fold the write-ahead log into the file, so the moved file is whole.
            current.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            (rows,) = current.execute("SELECT COUNT(*) FROM requests").fetchone()
    except sqlite3.Error as error:
        raise BackupError(
            f"cannot read the current ledger {target}: {error}"
        ) from error
    if rows and not force:
        raise BackupError(
            f"{target} contains {rows} requests; pass --force to replace them (the "
            "current file is kept beside it)"
        )
    return move_aside(target, clock())


def _count_requests(path: Path) -> int:
    with connect_existing(path, "ro") as connection:
        (rows,) = connection.execute("SELECT COUNT(*) FROM requests").fetchone()
    return int(rows)


def _exclusive_lock(ledger_path: Path) -> contextlib.AbstractContextManager[None]:
    busy = BackupError(
        f"a router has the ledger {ledger_path} open; stop every router that "
        "uses it, then restore (--force does not override this)"
    )
    return exclusive_lock(lock_path(ledger_path), busy)
