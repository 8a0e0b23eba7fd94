"""Test that the replay command runs on a tiny sample and writes its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_replay_on_simulator_writes_report(data_dir: Path, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "benchmarks.replay",
        "--backend",
        "simulator",
        "--pairs",
        "10",
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(tmp_path),
    ]
    finished = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr

    report = json.loads((tmp_path / "replay-simulator.json").read_text())
    statuses = report["cache_status"]
    repeats = report["run"]["repeats"]
    assert report["queries"] == 20 + repeats
    assert repeats == 2
    assert sum(statuses.values()) == report["queries"]
    assert statuses["error"] == 0
    # Every repeat follows its first copy, so it must be served from the cache.
    assert statuses["exact_hit"] + statuses["semantic_hit"] >= repeats
    assert report["cost_usd"]["baseline_complex_tier_no_cache"] > 0
    assert (
        report["cost_usd"]["total"]
        < report["cost_usd"]["baseline_complex_tier_no_cache"]
    )
    assert report["latency_ms"]["all"]["count"] == report["queries"]
    markdown = (tmp_path / "replay-simulator.md").read_text()
    assert markdown.startswith(f"# Replay: {report['queries']} Quora questions")
