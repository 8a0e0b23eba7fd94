"""Tests of the startup warning about unknown QUERYGATE_CACHE_* variables."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cache_service.settings import ENV_PREFIX, service_env_names
from cache_service.unknown_env import find_unknown_variables, warn_unknown_variables


def test_misspelled_variable_gets_closest_setting() -> None:
    environ = {
        "QUERYGATE_CACHE_MAX_ENTRY": "5",
        "QUERYGATE_CACHE_MAX_ENTRIES": "5",
        "QUERYGATE_ROUTER_ADDRESS": "127.0.0.1:1",
        "HOME": "/root",
    }

    unknown = find_unknown_variables(environ, ENV_PREFIX, service_env_names())

    assert [item.name for item in unknown] == ["QUERYGATE_CACHE_MAX_ENTRY"]
    assert unknown[0].closest == "QUERYGATE_CACHE_MAX_ENTRIES"


def test_unrelated_variable_gets_no_suggestion() -> None:
    unknown = find_unknown_variables(
        {"QUERYGATE_CACHE_ZZZZZZZZZZZZZZZZZZZZ": "1"}, ENV_PREFIX, service_env_names()
    )

    assert len(unknown) == 1
    assert unknown[0].closest == ""


def test_every_settings_variable_is_known() -> None:
    environ = {name: "x" for name in service_env_names()}

    assert "QUERYGATE_CACHE_FALSE_HIT_GUARD" in environ
    assert find_unknown_variables(environ, ENV_PREFIX, service_env_names()) == []


def test_warning_names_variable_not_value(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.unknown_env")
    environ = {"QUERYGATE_CACHE_API_KEY_FILE": "secret-value"}
    with caplog.at_level(logging.WARNING, logger=logger.name):
        warn_unknown_variables(logger, environ, ENV_PREFIX, service_env_names())

    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.getMessage() == "unknown_setting_variable"
    assert record.variable == "QUERYGATE_CACHE_API_KEY_FILE"  # type: ignore[attr-defined]
    assert record.closest_setting == "QUERYGATE_CACHE_API_KEYS_FILE"  # type: ignore[attr-defined]
    assert "secret-value" not in caplog.text


def test_service_process_logs_unknown_variable(tmp_path: Path) -> None:
    # An occupied port makes the service stop right after logging its settings,
    # before the embedding model loads.
    with socket.socket() as occupied:
        occupied.bind(("127.0.0.1", 0))
        occupied.listen()
        port = occupied.getsockname()[1]
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("QUERYGATE_")
        }
        environment.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            QUERYGATE_LOG_FORMAT="json",
            QUERYGATE_CACHE_ADDRESS=f"127.0.0.1:{port}",
            QUERYGATE_CACHE_DATA_DIR=str(tmp_path / "data"),
            QUERYGATE_CACHE_MAX_ENTRY="5",
        )
        result = subprocess.run(
            [sys.executable, "-m", "cache_service"],
            env=environment,
            capture_output=True,
            timeout=60,
        )
    # gRPC's C core writes its bind error as a plain line among the JSON lines.
    lines = [
        json.loads(line)
        for line in result.stderr.decode().splitlines()
        if line.startswith("{")
    ]
    warnings = [line for line in lines if line["event"] == "unknown_setting_variable"]

    assert result.returncode == 1
    assert len(warnings) == 1
    assert warnings[0]["level"] == "WARNING"
    assert warnings[0]["variable"] == "QUERYGATE_CACHE_MAX_ENTRY"
    assert warnings[0]["closest_setting"] == "QUERYGATE_CACHE_MAX_ENTRIES"
