"""The jq commands in docs/runbooks.md work on a log as the services write it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "docs" / "runbooks.md"

# A router's stderr with QUERYGATE_LOG_FORMAT=json mixes JSON lines with lines that
# llama.cpp's tokenizer and gRPC's C core print themselves.
MIXED_LOG = "\n".join(
    [
        json.dumps({"event": "server_started", "port": 50051}),
        "llama_context: n_ctx_seq (512) > n_ctx_train (0) -- possible training "
        "context overflow",
        json.dumps({"event": "rpc_completed", "method": "Route", "code": "OK"}),
        "I1204 20:00:00.000000 1 ssl_transport_security.cc:1 Handshake failed",
        json.dumps({"event": "rpc_completed", "method": "Route", "code": "INTERNAL"}),
    ]
)


def jq_commands() -> list[str]:
    text = RUNBOOKS.read_text(encoding="utf-8")
    return [line.strip() for line in re.findall(r"^\s*jq .*$", text, re.M)]


def test_runbook_has_jq_command() -> None:
    assert jq_commands()


def test_runbook_jq_command_skips_non_json_lines(tmp_path: Path) -> None:
    assert shutil.which("jq"), "jq is needed to run the runbook's commands"
    (tmp_path / "router.log").write_text(MIXED_LOG + "\n", encoding="utf-8")

    for command in jq_commands():
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )

        assert result.returncode == 0, f"{command}\n{result.stderr}"
        assert [json.loads(line)["code"] for line in result.stdout.splitlines()] == [
            "INTERNAL"
        ]
