"""SQLite file helpers shared by the cache's and the router's backup code.

Only the standard library is imported here, so the router can use it without
loading the cache's model code.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path


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
