"""Test that the load benchmark runs both services on a tiny sample and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_load_runs_two_scales_and_writes_report(
    data_dir: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_load",
        "--data-dir",
        str(data_dir),
        "--clients",
        "2",
        "--scales",
        "1,2",
        "--duration",
        "1",
        "--preload",
        "10",
        "--speed-iterations",
        "3",
        "--pairs",
        "300",
        "--out-dir",
        str(out_dir),
        "--run-dir",
        str(tmp_path / "run"),
    ]
    finished = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr

    report = json.loads((out_dir / "bench-load.json").read_text())
    runs = report["load_runs"]
    assert [run["clients"] for run in runs] == [2, 4]
    for run in runs:
        summary = run["summary"]
        assert summary["requests"] > 0
        assert summary["paths"]["error"] == 0
        assert sum(summary["paths"].values()) == summary["requests"]
        assert run["preload_paths"] == {"miss": 10}
        assert run["peak_rss_kib"]["cache"] > 0
        assert run["peak_rss_kib"]["router"] > 0
        assert run["cpu_s"]["cache"] > 0
        assert run["cpu_s"]["benchmark clients"] > 0
    speed = report["speed"]
    assert speed["parts_ms"]["router_round_trip"]["count"] == 3
    assert speed["parts_ms"]["exact_hit"]["count"] >= 1
    assert speed["targets"][0]["name"] == "exact hit"
    assert speed["targets"][0]["floor_ms"] > 0
    markdown = (out_dir / "bench-load.md").read_text()
    assert markdown.startswith("# Load benchmark")
    assert "## Load: 4 clients for 1 s" in markdown
