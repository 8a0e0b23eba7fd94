"""SQLite file helpers shared by the cache's and the router's storage and backups.

Only the standard library is imported here, so the router can use it without
loading the cache's model code.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

SNAPSHOT_SUFFIX = ".sqlite3"
T = TypeVar("T")


@contextlib.contextmanager
def connect_existing(path: Path, mode: str) -> Iterator[sqlite3.Connection]:
    """Open an existing database; ``mode`` is ``ro`` or ``rw`` and never creates.

    Raises:
        sqlite3.Error: the file is missing or is not a database.
    """
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True)
    try:
        yield connection
    finally:
        connection.close()


def copy_database(source: sqlite3.Connection, destination: Path) -> None:
    """Copy ``source`` into a new single-file database at ``destination``.

    ``pages=-1`` copies every page in one step under one read transaction, so the
    copy is one consistent state even while another connection commits.
    """
    destination.unlink(missing_ok=True)
    target = sqlite3.connect(destination)
    try:
        source.backup(target, pages=-1)
        # The copy inherits WAL mode; a snapshot should be one self-contained file.
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()


def fsync_path(path: Path) -> None:
    """Flush a file or a folder (after a rename) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_file(path: Path, exclusive: bool) -> int:
    """Take a ``flock`` on ``path`` without waiting and return its descriptor.

    Closing the descriptor, or the end of the process (also by ``kill -9``),
    releases the lock.

    Raises:
        BlockingIOError: another descriptor holds a conflicting lock.
        OSError: the file cannot be created or opened.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def exclusive_lock(path: Path, busy_error: Exception) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the ``with`` block.

    Raises:
        Exception: ``busy_error`` itself, when another descriptor holds the lock.
        OSError: the lock file cannot be created or opened.
    """
    try:
        fd = lock_file(path, exclusive=True)
    except BlockingIOError:
        raise busy_error from None
    try:
        yield
    finally:
        os.close(fd)


def utc_stamp(seconds: float) -> str:
    """Format Unix seconds as a UTC time for file names, e.g. ``20261204T201500Z``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%dT%H%M%SZ")


def snapshot_database(
    source_path: Path,
    backup_dir: Path,
    prefix: str,
    created_at: float,
    inspect: Callable[[Path], T],
) -> tuple[Path, T]:
    """Copy the database at ``source_path`` into a new file in ``backup_dir``.

    The file is named ``<prefix><UTC time>-<6 hex digits>.sqlite3`` and appears
    under that name only once it is complete and flushed. ``inspect`` reads the
    copy (for example its row counts) before the rename, and its result is
    returned with the final path, made absolute so that callers and logs never
    depend on the service's working directory.

    Raises:
        OSError, sqlite3.Error: the copy failed. The partial file is removed.
    """
    name = f"{prefix}{utc_stamp(created_at)}-{secrets.token_hex(3)}{SNAPSHOT_SUFFIX}"
    final = backup_dir.absolute() / name
    partial = backup_dir / f".{name}.partial"
    try:
        backup_dir.mkdir(parents=True, exist_ok=True)
        with connect_existing(source_path, "rw") as source:
            copy_database(source, partial)
        inspected = inspect(partial)
        fsync_path(partial)
        partial.replace(final)
        fsync_path(backup_dir)
    except (OSError, sqlite3.Error):
        partial.unlink(missing_ok=True)
        raise
    return final, inspected


def replace_database(
    snapshot: Path, target: Path, prepare: Callable[[Path], None] | None = None
) -> None:
    """Copy ``snapshot`` to a file beside ``target``, then rename it over ``target``.

    ``prepare`` may change the copy before the rename. The caller must hold the
    database's exclusive lock.

    Raises:
        OSError, sqlite3.Error: the copy failed. The partial file is removed and
            ``target`` is left as it was.
    """
    partial = target.with_name(f".{target.name}.restoring")
    try:
        with connect_existing(snapshot, "ro") as source:
            copy_database(source, partial)
        if prepare is not None:
            prepare(partial)
        fsync_path(partial)
        partial.replace(target)
        fsync_path(target.parent)
    except (OSError, sqlite3.Error):
        partial.unlink(missing_ok=True)
        raise


def move_aside(target: Path, moved_at: float) -> Path:
    """Rename ``target`` to ``<name>.replaced-<UTC time>`` and return the new path.

    The caller folds the write-ahead log into the file first (``PRAGMA
    wal_checkpoint(TRUNCATE)``), because the ``-wal`` and ``-shm`` files of
    ``target`` are deleted here.
    """
    moved = target.with_name(f"{target.name}.replaced-{utc_stamp(moved_at)}")
    target.replace(moved)
    for suffix in ("-wal", "-shm"):
        target.with_name(target.name + suffix).unlink(missing_ok=True)
    return moved
