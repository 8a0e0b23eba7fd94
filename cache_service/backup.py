"""Snapshots of the entry store, and restoring one into a data folder.

A snapshot is one SQLite file written with SQLite's online backup API from a
separate read connection. The copy runs in one backup step, so it reads one
consistent state of the database while the service keeps committing stores.

Restore rule: the target data folder must not be open by a cache service. A
restore takes the folder's lock exclusively and fails while any service holds it,
with or without ``--force``. ``force`` is needed to replace a store that already
contains entries. The replaced file is kept beside it as
``entries.sqlite3.replaced-<UTC time>``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cache_service.errors import BackupError
from cache_service.persistence import DATABASE_NAME, LOCK_NAME, SCHEMA_VERSION
from cache_service.sqlite_files import (
    connect_existing,
    exclusive_lock,
    move_aside,
    replace_database,
    snapshot_database,
)

SNAPSHOT_PREFIX = "entries-"
_REQUIRED_MANIFEST_KEYS = ("schema_version", "embedding_model", "embedding_dimension")


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot file and what it contains; ``created_at`` is Unix seconds."""

    path: Path
    entries: int
    vectors: int
    size_bytes: int
    created_at: float


@dataclass(frozen=True)
class RestoreOutcome:
    """Counts of a restored store, and the new path of the store it replaced."""

    entries: int
    vectors: int
    replaced: Path | None


class SnapshotWriter:
    """Writes snapshots of ``data_dir``'s store into ``backup_dir``."""

    def __init__(
        self,
        data_dir: Path | None,
        backup_dir: Path | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._data_dir = data_dir
        self._backup_dir = backup_dir
        self._clock = clock

    def write(self) -> SnapshotInfo:
        """Write one snapshot and return its path and counts.

        Raises:
            BackupError: ``data_dir`` or ``backup_dir`` is not set, the store
                does not exist, or the copy failed.
        """
        if self._data_dir is None:
            raise BackupError(
                "snapshots need a durable store, but data_dir is empty (entries "
                "are kept in memory only); set data_dir"
            )
        if self._backup_dir is None:
            raise BackupError("backup_dir is empty; set it to the snapshot folder")
        return write_snapshot(self._data_dir, self._backup_dir, self._clock)


def write_snapshot(
    data_dir: Path, backup_dir: Path, clock: Callable[[], float] = time.time
) -> SnapshotInfo:
    """Copy the store of ``data_dir`` into a new file in ``backup_dir``.

    Safe while a service writes to the store. The file appears under its final
    name only once it is complete.

    Raises:
        BackupError: the store does not exist or the copy failed.
    """
    source_path = data_dir / DATABASE_NAME
    if not source_path.is_file():
        raise BackupError(
            f"no cache database at {source_path}; check data_dir, or start the "
            "service once to create it"
        )
    created_at = clock()
    try:
        final, (entries, vectors) = snapshot_database(
            source_path, backup_dir, SNAPSHOT_PREFIX, created_at, _count_entries
        )
    except (OSError, sqlite3.Error) as error:
        raise BackupError(f"snapshot of the cache database failed: {error}") from error
    return SnapshotInfo(final, entries, vectors, final.stat().st_size, created_at)


def read_snapshot(path: Path) -> SnapshotInfo:
    """Check that ``path`` is an intact cache snapshot and return its counts.

    Raises:
        BackupError: the file is missing, damaged, or not a cache database of
            this schema version.
    """
    if not path.is_file():
        raise BackupError(f"snapshot file not found: {path}")
    try:
        with connect_existing(path, "ro") as connection:
            (verdict,) = connection.execute("PRAGMA integrity_check").fetchone()
            manifest = dict(connection.execute("SELECT key, value FROM manifest"))
    except sqlite3.Error as error:
        raise BackupError(
            f"{path} is not a readable cache snapshot: {error}"
        ) from error
    if verdict != "ok":
        raise BackupError(f"{path} failed SQLite's integrity check: {verdict}")
    missing = [key for key in _REQUIRED_MANIFEST_KEYS if key not in manifest]
    if missing:
        raise BackupError(f"{path} is not a cache snapshot: manifest lacks {missing}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise BackupError(
            f"{path} has schema version {manifest['schema_version']}, but this "
            f"service reads version {SCHEMA_VERSION}"
        )
    entries, vectors = _count_entries(path)
    return SnapshotInfo(
        path, entries, vectors, path.stat().st_size, path.stat().st_mtime
    )


def restore_snapshot(
    snapshot: Path,
    data_dir: Path,
    *,
    force: bool = False,
    clock: Callable[[], float] = time.time,
) -> RestoreOutcome:
    """Make the snapshot the store of ``data_dir``, which no service may have open.

    Entry ids stay unique: the restored store continues after the highest id the
    replaced store ever issued, so an id handed out after the snapshot is never
    given to another entry.

    Raises:
        BackupError: the snapshot is invalid, a service has ``data_dir`` open, or
            the store contains entries and ``force`` is false.
    """
    info = read_snapshot(snapshot)
    target = data_dir / DATABASE_NAME
    with _exclusive_lock(data_dir):
        replaced, previous_next_id = _set_aside(target, force, clock)
        try:
            replace_database(
                snapshot, target, lambda copy: _raise_next_id(copy, previous_next_id)
            )
        except (OSError, sqlite3.Error) as error:
            raise BackupError(f"restore into {data_dir} failed: {error}") from error
    return RestoreOutcome(info.entries, info.vectors, replaced)


def _set_aside(
    target: Path, force: bool, clock: Callable[[], float]
) -> tuple[Path | None, int]:
    """Move an existing store out of the way and return its new path and next id."""
    if not target.exists():
        return None, 0
    try:
        with connect_existing(target, "rw") as current:
            # Fold the write-ahead log into the file, so the moved file is whole.
            current.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            (entries,) = current.execute("SELECT COUNT(*) FROM entries").fetchone()
            next_id = _next_id(current)
    except sqlite3.Error as error:
        raise BackupError(f"cannot read the current store {target}: {error}") from error
    if entries and not force:
        raise BackupError(
            f"{target} contains {entries} entries; pass --force to replace them (the "
            "current file is kept beside it)"
        )
    return move_aside(target, clock()), next_id


def _raise_next_id(path: Path, at_least: int) -> None:
    with connect_existing(path, "rw") as connection, connection:
        current = _next_id(connection)
        connection.execute(
            "UPDATE manifest SET value = ? WHERE key = 'next_id'",
            (str(max(current, at_least)),),
        )


def _next_id(connection: sqlite3.Connection) -> int:
    row = connection.execute(
        "SELECT value FROM manifest WHERE key = 'next_id'"
    ).fetchone()
    (max_id,) = connection.execute(
        "SELECT COALESCE(MAX(entry_id), 0) FROM entries"
    ).fetchone()
    return max(int(row[0]) if row else 1, int(max_id) + 1)


def _count_entries(path: Path) -> tuple[int, int]:
    with connect_existing(path, "ro") as connection:
        entries, vectors = connection.execute(
            "SELECT COUNT(*), COUNT(vector) FROM entries"
        ).fetchone()
    return int(entries), int(vectors)


def _exclusive_lock(data_dir: Path) -> contextlib.AbstractContextManager[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    busy = BackupError(
        f"a cache service has {data_dir} open; stop it, then restore "
        "(--force does not override this)"
    )
    return exclusive_lock(data_dir / LOCK_NAME, busy)
