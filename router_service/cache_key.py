"""The router's API key for the cache: fixed from a variable, or read from a file.

A key from ``[cache] api_key_env`` is read once at start. A key from ``[cache]
api_key_file`` is re-read when the file's modification time, status change
time, size or inode changes, so rotating the router's service key needs no
restart. The status change time catches a rewrite in place that keeps the size
and restores the modification time. The file is checked on each cache call,
because a ``stat`` costs about 2 µs. When the new file is empty, unreadable or
does not contain a well-formed key (such as a half-written one), the previous
key stays in use and one warning names the file and the reason.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cache_service.api_keys import hash_key, is_well_formed_key, key_id_of
from router_service.errors import ConfigError
from router_service.settings import CacheSettings

logger = logging.getLogger(__name__)

_FileStamp = tuple[int, int, int, int]


class KeyFileError(ValueError):
    """The key file cannot be read or contains no usable key."""


def read_key_file(path: Path) -> str:
    """Return the first whitespace-separated word of ``path``, the key.

    Raises:
        KeyFileError: the file cannot be read, is empty, the key contains
            characters other than printable ASCII, which gRPC metadata rejects,
            or the key does not have the form that `keys add` prints.
    """
    try:
        words = path.read_text(encoding="utf-8").split()
    except OSError as error:
        raise KeyFileError(_read_failure(error)) from None
    except UnicodeDecodeError:
        raise KeyFileError(
            "it is not UTF-8 text. Write the key as printable ASCII."
        ) from None
    if not words:
        raise KeyFileError(
            "it is empty. Write the router's service key for the cache on its "
            "first line."
        )
    key = words[0]
    if not (key.isascii() and key.isprintable()):
        raise KeyFileError(
            "the key contains characters other than printable ASCII, which gRPC "
            "metadata cannot carry. Write the key exactly as `keys add` printed it."
        )
    if not is_well_formed_key(key):
        # A file read while another process writes it can hold part of a key.
        raise KeyFileError(
            f"the key is not well-formed: it must be qg_ and 43 URL-safe base64 "
            f"characters, but it has {len(key)} characters in all. Write the key "
            "exactly as `keys add` printed it, to a temporary file first and "
            "then rename that file over this one."
        )
    return key


def _read_failure(error: OSError) -> str:
    return f"reading it failed with {error.strerror}. Fix the path or its permissions."


def _file_stamp(path: Path) -> _FileStamp:
    status = os.stat(path)
    return (status.st_mtime_ns, status.st_ctime_ns, status.st_size, status.st_ino)


class CacheKeyFile:
    """The router's key for the cache, re-read when its file changes.

    A replaced file that cannot be used leaves the previous key in force and is
    logged once as ``cache_api_key_reload_failed``. Write a new key atomically
    (to a temporary file, then rename it), because a check between a truncate
    and the write reads an empty file and logs that warning.

    Raises:
        ConfigError: at creation, when the file cannot be used.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        # The stamp is taken before the read, so a change during the read is
        # seen by the next check.
        try:
            self._stamp: _FileStamp | None = _file_stamp(path)
            self._key = read_key_file(path)
        except OSError as error:
            raise ConfigError(
                f"cache.api_key_file {path} cannot be used: {_read_failure(error)}"
            ) from None
        except KeyFileError as error:
            raise ConfigError(
                f"cache.api_key_file {path} cannot be used: {error}"
            ) from None

    @property
    def path(self) -> Path:
        """The key file."""
        return self._path

    def current(self) -> str:
        """Return the key, re-reading the file first when it has changed."""
        try:
            stamp = _file_stamp(self._path)
        except OSError as error:
            # Warn once until the file is back. The next stat that succeeds
            # returns a new stamp, so the file is read again.
            if self._stamp is not None:
                self._warn(_read_failure(error))
            self._stamp = None
            return self._key
        if stamp == self._stamp:
            return self._key
        # Record the stamp first, so a bad file is read and reported only once.
        self._stamp = stamp
        try:
            key = read_key_file(self._path)
        except KeyFileError as error:
            self._warn(str(error))
            return self._key
        if key != self._key:
            self._key = key
            logger.info(
                "cache_api_key_reloaded",
                extra={"path": str(self._path), "key_id": key_id_of(hash_key(key))},
            )
        return self._key

    def _warn(self, reason: str) -> None:
        logger.warning(
            "cache_api_key_reload_failed",
            extra={
                "path": str(self._path),
                "reason": reason,
                "key_id": key_id_of(hash_key(self._key)),
                "remedy": "the router keeps sending the previous key; write the "
                "new key to the file",
            },
        )


def cache_api_key(settings: CacheSettings) -> str | CacheKeyFile | None:
    """Return the router's API key for the cache, or None when none is configured.

    A key given by environment variable is returned as a string and never
    changes. A key file is returned as a ``CacheKeyFile`` that follows changes.

    Raises:
        ConfigError: the named environment variable is unset or empty, or the
            key file cannot be read, is empty or contains an invalid key.
    """
    if settings.api_key_env:
        key = os.environ.get(settings.api_key_env, "").strip()
        if not key:
            raise ConfigError(
                f"cache.api_key_env names {settings.api_key_env}, but that "
                "environment variable is unset or empty. Export the router's "
                "service key for the cache there."
            )
        return key
    if settings.api_key_file:
        return CacheKeyFile(Path(settings.api_key_file))
    return None
