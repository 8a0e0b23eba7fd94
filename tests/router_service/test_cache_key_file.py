"""The router's key file for the cache: re-read on change, old key kept on errors.

The rotation against a real cache and router is in
tests/e2e/test_cache_key_rotation_e2e.py.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from cache_service.api_keys import hash_key, key_id_of
from router_service.cache_key import CacheKeyFile
from router_service.errors import ConfigError

# Keys of the form that `keys add` prints, both of the same length.
KEY_A = "qg_" + "a" * 43
KEY_B = "qg_" + "b" * 42 + "-"


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file and rename it over ``path``."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    partial.replace(path)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "service.key"
    path.write_text(KEY_A + "\n")
    return path


def _reload_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.getMessage() == "cache_api_key_reload_failed"
    ]


def test_key_file_follows_replacement(key_file: Path) -> None:
    source = CacheKeyFile(key_file)
    before = source.current()

    _replace(key_file, KEY_B + "\n")

    assert before == KEY_A
    assert source.current() == KEY_B


def test_key_file_follows_rewrite_in_place(key_file: Path) -> None:
    source = CacheKeyFile(key_file)

    key_file.write_text(KEY_B + "\n")

    assert source.current() == KEY_B


def test_key_file_logs_new_key_id(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = CacheKeyFile(key_file)
    _replace(key_file, KEY_B)

    with caplog.at_level(logging.INFO, logger="router_service.cache_key"):
        source.current()

    [record] = caplog.records
    assert record.getMessage() == "cache_api_key_reloaded"
    assert record.key_id == key_id_of(hash_key(KEY_B))  # type: ignore[attr-defined]
    assert KEY_B not in str(record.__dict__)


def test_empty_key_file_keeps_old_key(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = CacheKeyFile(key_file)
    _replace(key_file, "\n")

    with caplog.at_level(logging.WARNING, logger="router_service.cache_key"):
        keys = [source.current() for _ in range(3)]

    assert keys == [KEY_A] * 3
    [warning] = _reload_failures(caplog)
    assert warning.path == str(key_file)  # type: ignore[attr-defined]
    assert "empty" in warning.reason  # type: ignore[attr-defined]


def test_missing_key_file_keeps_old_key(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = CacheKeyFile(key_file)
    key_file.unlink()

    with caplog.at_level(logging.WARNING, logger="router_service.cache_key"):
        keys = [source.current() for _ in range(3)]

    assert keys == [KEY_A] * 3
    [warning] = _reload_failures(caplog)
    assert "No such file" in warning.reason  # type: ignore[attr-defined]


def test_unreadable_key_file_keeps_old_key(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = CacheKeyFile(key_file)
    # A folder in place of the file fails to read even for root, unlike chmod.
    key_file.unlink()
    key_file.mkdir()

    with caplog.at_level(logging.WARNING, logger="router_service.cache_key"):
        key = source.current()

    assert key == KEY_A
    [warning] = _reload_failures(caplog)
    assert "Is a directory" in warning.reason  # type: ignore[attr-defined]


def test_non_ascii_key_keeps_old_key(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = CacheKeyFile(key_file)
    _replace(key_file, "qg_schlüssel\n")

    with caplog.at_level(logging.WARNING, logger="router_service.cache_key"):
        key = source.current()

    assert key == KEY_A
    [warning] = _reload_failures(caplog)
    assert "printable ASCII" in warning.reason  # type: ignore[attr-defined]


def test_half_written_key_keeps_old_key(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = CacheKeyFile(key_file)
    key_file.write_text(KEY_B[:20])

    with caplog.at_level(logging.WARNING, logger="router_service.cache_key"):
        keys = [source.current() for _ in range(3)]

    assert keys == [KEY_A] * 3
    [warning] = _reload_failures(caplog)
    assert warning.path == str(key_file)  # type: ignore[attr-defined]
    assert "not well-formed" in warning.reason  # type: ignore[attr-defined]
    assert KEY_B[:20] not in warning.reason  # type: ignore[attr-defined]


def test_key_with_wrong_prefix_keeps_old_key(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = CacheKeyFile(key_file)
    _replace(key_file, "xx_" + KEY_B[3:] + "\n")

    with caplog.at_level(logging.WARNING, logger="router_service.cache_key"):
        key = source.current()

    assert key == KEY_A
    [warning] = _reload_failures(caplog)
    assert "not well-formed" in warning.reason  # type: ignore[attr-defined]


def test_malformed_key_file_fails_at_start(tmp_path: Path) -> None:
    path = tmp_path / "service.key"
    path.write_text("qg_service\n")

    with pytest.raises(ConfigError, match="not well-formed"):
        CacheKeyFile(path)


def test_rewrite_with_restored_mtime_is_noticed(key_file: Path) -> None:
    source = CacheKeyFile(key_file)
    before = key_file.stat()

    # Same size and inode, and the modification time is set back.
    key_file.write_text(KEY_B + "\n")
    os.utime(key_file, ns=(before.st_atime_ns, before.st_mtime_ns))

    assert key_file.stat().st_mtime_ns == before.st_mtime_ns
    assert key_file.stat().st_size == before.st_size
    assert source.current() == KEY_B


def test_key_file_recovers_after_bad_write(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = CacheKeyFile(key_file)
    key_file.unlink()
    source.current()
    _replace(key_file, "")
    source.current()

    _replace(key_file, KEY_B + "\n")

    assert source.current() == KEY_B
    assert len(_reload_failures(caplog)) == 2


def test_unusable_key_file_fails_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"

    with pytest.raises(ConfigError, match=r"cache\.api_key_file .* cannot be used"):
        CacheKeyFile(missing)
