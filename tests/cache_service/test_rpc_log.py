"""Tests of the rpc_completed line fields that both services' interceptors log."""

from __future__ import annotations

import grpc
import pytest

from cache_service.rpc_log import (
    MAX_LOGGED_ID_CHARS,
    RPC_LOG_FIELDS,
    loggable_id,
    rpc_completed_fields,
    status_code_name,
)


def test_completed_fields_fill_missing_with_none() -> None:
    line = rpc_completed_fields("Lookup", "OK", 0.0123456, {"tenant": "acme"})

    assert line["method"] == "Lookup"
    assert line["code"] == "OK"
    assert line["duration_ms"] == 12.35
    assert line["tenant"] == "acme"
    for name in RPC_LOG_FIELDS:
        assert name in line
    assert line["error_id"] is None


def test_completed_fields_keep_extra_annotations() -> None:
    line = rpc_completed_fields("Store", "OK", 0.0, {"key_id": "k1", "tier": "x"})

    assert line["key_id"] == "k1"
    assert line["tier"] == "x"


@pytest.mark.parametrize(
    ("code", "error", "expected"),
    [
        (grpc.StatusCode.NOT_FOUND, None, "NOT_FOUND"),
        (grpc.StatusCode.OK, RuntimeError("x"), "OK"),
        (None, None, "OK"),
        (None, RuntimeError("escaped"), "UNKNOWN"),
    ],
    ids=["set-code", "set-code-wins", "no-code", "escaped-error"],
)
def test_status_code_name(
    code: grpc.StatusCode | None, error: BaseException | None, expected: str
) -> None:
    assert status_code_name(code, error) == expected


def test_loggable_id_keeps_short_printable() -> None:
    assert loggable_id("acme-1") == "acme-1"


def test_loggable_id_cuts_and_escapes() -> None:
    logged = loggable_id("a\nb" + "c" * (2 * MAX_LOGGED_ID_CHARS))

    assert "\n" not in logged
    assert logged.startswith("'a\\nb")
    # ascii() adds two quotes and turns the newline into two characters.
    assert len(logged) == MAX_LOGGED_ID_CHARS + 3
