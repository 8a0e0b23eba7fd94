"""Tests of the router's startup warning about unknown QUERYGATE_ROUTER_* variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cache_service.unknown_env import find_unknown_variables
from router_service.config import ENV_PREFIX, known_env_variables
from router_service.testing import settings_for_tests

# The artifact folder is empty, so the router stops right after logging its
# settings, before it binds a port.
CONFIG = """
[server]
address = "127.0.0.1:0"

[classifier]
artifact_dir = "{artifact_dir}"

[tiers.simple]
models = ["sim"]
[tiers.medium]
models = ["sim"]
[tiers.complex]
models = ["sim"]

[models.sim]
backend = "simulator"
model = "sim-1"
api_key_env = "QUERYGATE_ROUTER_SIM_KEY"
input_price_per_1k = 0.001
output_price_per_1k = 0.002
context_window = 4096
timeout_s = 5.0
"""


def test_misspelled_router_variable_gets_suggestion() -> None:
    settings = settings_for_tests()
    environ = {
        "QUERYGATE_ROUTER_CACHE_TARGT": "127.0.0.1:50052",
        "QUERYGATE_ROUTER_LEDGER_PATH": "ledger.sqlite3",
        "QUERYGATE_CACHE_ADDRESS": "127.0.0.1:50052",
    }

    unknown = find_unknown_variables(environ, ENV_PREFIX, known_env_variables(settings))

    assert [item.name for item in unknown] == ["QUERYGATE_ROUTER_CACHE_TARGT"]
    assert unknown[0].closest == "QUERYGATE_ROUTER_CACHE_TARGET"


def test_router_process_logs_unknown_variable(tmp_path: Path) -> None:
    artifact_dir = tmp_path / "no-artifact"
    artifact_dir.mkdir()
    config = tmp_path / "router.toml"
    config.write_text(CONFIG.format(artifact_dir=artifact_dir), encoding="utf-8")
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("QUERYGATE_")
    }
    environment.update(
        QUERYGATE_LOG_FORMAT="json",
        QUERYGATE_ROUTER_ADRESS="127.0.0.1:0",
        QUERYGATE_ROUTER_SIM_KEY="not-logged",
    )

    result = subprocess.run(
        [sys.executable, "-m", "router_service", "--config", str(config)],
        env=environment,
        capture_output=True,
        timeout=60,
    )
    lines = [json.loads(line) for line in result.stderr.decode().splitlines()]
    warnings = [line for line in lines if line["event"] == "unknown_setting_variable"]

    assert result.returncode == 1
    assert len(warnings) == 1
    assert warnings[0]["level"] == "WARNING"
    assert warnings[0]["variable"] == "QUERYGATE_ROUTER_ADRESS"
    assert warnings[0]["closest_setting"] == "QUERYGATE_ROUTER_ADDRESS"
    assert "not-logged" not in result.stderr.decode()
