"""Durable storage of cache entries and their vectors in SQLite (WAL mode).

Vectors are stored with the entries, so a restart rebuilds the FAISS index from
the database without embedding again. The database records the embedding model and
dimension, and opening it with another model raises IndexVersionError. Not
thread-safe: the cache calls it under its own lock.

An open store takes an exclusive ``flock`` on ``<data_dir>/entries.sqlite3.lock``,
so a second cache service cannot open the same folder, and a restore (which takes
the same lock) can tell that a service has the database open.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from cache_service.embedding import Vectors
from cache_service.entries import CacheEntry
from cache_service.errors import IndexVersionError, StorageError
from cache_service.sqlite_files import lock_file

logger = logging.getLogger(__name__)

DATABASE_NAME = "entries.sqlite3"
LOCK_NAME = DATABASE_NAME + ".lock"
SCHEMA_VERSION = "1"
# Manifest key that the health check rewrites to prove the database takes writes.
HEALTH_PROBE_KEY = "health_checked_at"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    entry_id INTEGER PRIMARY KEY,
    scope_key TEXT NOT NULL,
    tenant TEXT NOT NULL,
    normalized_query TEXT NOT NULL,
    answer TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at REAL NOT NULL,
    vector BLOB
);
"""


class EntryStore(Protocol):
    """Durable storage of the cache entries, where every write is atomic."""

    def load(self) -> Iterator[tuple[CacheEntry, Vectors | None]]:
        """Yield every stored entry with its vector, oldest first."""
        ...

    def next_id(self) -> int:
        """Return the smallest entry id that was never used."""
        ...

    def write(
        self,
        insert: tuple[CacheEntry, Vectors | None] | None,
        delete: Sequence[int],
    ) -> None:
        """Delete ``delete`` and add ``insert`` in one transaction.

        Raises:
            StorageError: the write failed and nothing was changed.
        """
        ...

    def close(self) -> None:
        """Release the database."""
        ...


class SqliteEntryStore:
    """Entries in ``<data_dir>/entries.sqlite3``, one transaction per write.

    WAL mode with ``synchronous=NORMAL``: a committed write survives a crash or
    ``kill -9`` of the process. NOTE: after an operating-system crash or power
    loss, the last few commits can be lost, because WAL syncs only at checkpoints.
    """

    def __init__(
        self, connection: sqlite3.Connection, path: Path, lock: DataDirLock
    ) -> None:
        self._connection = connection
        self._path = path
        self._lock = lock
        stat = path.stat()
        self._file_identity = (stat.st_dev, stat.st_ino)
        self._write_failure: tuple[float, str] | None = None

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def write_failure(self) -> tuple[float, str] | None:
        """Unix time and message of the last write, if it failed."""
        return self._write_failure

    @classmethod
    def open(
        cls,
        data_dir: Path,
        model_name: str,
        dimension: int,
        lock: DataDirLock | None = None,
    ) -> SqliteEntryStore:
        """Open or create the database for this embedding model and dimension.

        ``lock`` is the folder's lock when the caller took it already. The store
        owns it from then on, and releases it on close or when opening fails.

        Raises:
            IndexVersionError: the stored entries come from another model or
                dimension.
            StorageError: the folder or database cannot be opened, or another
                cache service or a restore is using ``data_dir``.
        """
        path = data_dir / DATABASE_NAME
        lock = DataDirLock(data_dir) if lock is None else lock
        try:
            # The cache's lock serializes all use, so any thread may call in.
            connection = sqlite3.connect(path, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            lock.release()
            raise StorageError(
                f"failed to open the cache database {path}: {error}. "
                "Check that data_dir is a writable folder."
            ) from error
        store = cls(connection, path, lock)
        store._check_manifest(model_name, dimension)
        return store

    def _check_manifest(self, model_name: str, dimension: int) -> None:
        expected = {
            "schema_version": SCHEMA_VERSION,
            "embedding_model": model_name,
            "embedding_dimension": str(dimension),
        }
        stored = dict(self._connection.execute("SELECT key, value FROM manifest"))
        if not stored:
            with self._connection:
                self._connection.executemany(
                    "INSERT INTO manifest (key, value) VALUES (?, ?)",
                    [*expected.items(), ("next_id", "1")],
                )
            return
        found = {key: stored.get(key) for key in expected}
        if found != expected:
            self.close()
            raise IndexVersionError(
                f"the cache database {self._path} was built with {found}, but this "
                f"service runs {expected}. Delete or move {self._path.parent} to "
                "start with an empty cache, or start the service with the old model."
            )

    def load(self) -> Iterator[tuple[CacheEntry, Vectors | None]]:
        rows = self._connection.execute(
            "SELECT entry_id, scope_key, tenant, normalized_query, answer, metadata,"
            " created_at, vector FROM entries ORDER BY created_at, entry_id"
        )
        for row in rows:
            vector = None if row[7] is None else np.frombuffer(row[7], dtype="<f4")
            entry = CacheEntry(
                entry_id=row[0],
                scope_key=row[1],
                tenant=row[2],
                normalized_query=row[3],
                answer=row[4],
                metadata=json.loads(row[5]),
                created_at=row[6],
                in_index=vector is not None,
            )
            yield entry, vector

    def next_id(self) -> int:
        try:
            (manifest_next,) = self._connection.execute(
                "SELECT value FROM manifest WHERE key = 'next_id'"
            ).fetchone()
            (max_id,) = self._connection.execute(
                "SELECT COALESCE(MAX(entry_id), 0) FROM entries"
            ).fetchone()
        except sqlite3.Error as error:
            raise StorageError(f"cache database read failed: {error}") from error
        return max(int(manifest_next), int(max_id) + 1)

    def write(
        self,
        insert: tuple[CacheEntry, Vectors | None] | None,
        delete: Sequence[int],
    ) -> None:
        try:
            with self._connection:
                self._connection.executemany(
                    "DELETE FROM entries WHERE entry_id = ?",
                    [(entry_id,) for entry_id in delete],
                )
                if insert is not None:
                    self._insert(*insert)
        except sqlite3.Error as error:
            self._write_failure = (time.time(), str(error))
            raise StorageError(f"cache database write failed: {error}") from error
        self._write_failure = None

    def _insert(self, entry: CacheEntry, vector: Vectors | None) -> None:
        blob = None if vector is None else np.asarray(vector, dtype="<f4").tobytes()
        self._connection.execute(
            "INSERT INTO entries (entry_id, scope_key, tenant, normalized_query,"
            " answer, metadata, created_at, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.entry_id,
                entry.scope_key,
                entry.tenant,
                entry.normalized_query,
                entry.answer,
                json.dumps(dict(entry.metadata), ensure_ascii=False),
                entry.created_at,
                blob,
            ),
        )
        self._connection.execute(
            "UPDATE manifest SET value = ? WHERE key = 'next_id'",
            (str(entry.entry_id + 1),),
        )

    def check_writable(self, timeout_s: float) -> None:
        """Commit a probe row through a second connection to prove writes work.

        Also checks that the file at the database's path is still the one this
        store opened. A second connection is used so that the probe never waits
        on the cache's lock, and it waits at most ``timeout_s`` for SQLite's
        write lock.

        Raises:
            StorageError: the file was removed or replaced, or the write failed,
                with the cause and what to do.
        """
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            raise StorageError(
                "the database file was removed while open, so new entries are lost "
                "at restart; restore it from a snapshot and restart the service"
            ) from None
        if (stat.st_dev, stat.st_ino) != self._file_identity:
            raise StorageError(
                "the database file was replaced while open, so the service writes "
                "to the old file; restart the service to open the new one"
            )
        # NOTE: for root, os.access ignores permission bits (a read-only mount
        # still fails), so a chmod'ed data_dir is caught only for other users.
        if not os.access(self._path.parent, os.W_OK):
            raise StorageError(
                "data_dir is not writable, so the database cannot be reopened "
                "after a restart; make the folder writable"
            )
        # mode=rw never creates a file, so a vanished database is not recreated.
        uri = self._path.resolve().as_uri() + "?mode=rw"
        try:
            probe = sqlite3.connect(uri, uri=True, timeout=timeout_s)
            try:
                with probe:
                    probe.execute(
                        "INSERT OR REPLACE INTO manifest (key, value) VALUES (?, ?)",
                        (HEALTH_PROBE_KEY, repr(time.time())),
                    )
            finally:
                probe.close()
        except sqlite3.Error as error:
            raise StorageError(
                f"a probe write to the database failed: {error}"
            ) from error

    def close(self) -> None:
        self._connection.close()
        self._lock.release()


class DataDirLock:
    """An exclusive ``flock`` on a data folder's lock file, held until released.

    Raises:
        StorageError: the folder cannot be created, or another cache service or
            a restore holds the lock.
    """

    def __init__(self, data_dir: Path) -> None:
        self._fd: int | None = _lock_exclusive(data_dir)

    def release(self) -> None:
        """Release the lock. Later calls do nothing."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _lock_exclusive(data_dir: Path) -> int:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        return lock_file(data_dir / LOCK_NAME, exclusive=True)
    except BlockingIOError:
        raise StorageError(
            f"the cache data folder {data_dir} is in use by another cache service "
            "or a restore; stop that process, or set data_dir to another folder"
        ) from None
    except OSError as error:
        raise StorageError(
            f"failed to open the cache database lock file in {data_dir}: {error}. "
            "Check that data_dir is a writable folder."
        ) from error
