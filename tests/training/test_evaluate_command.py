"""`python -m training evaluate` on an artifact trained from the tiny fixture data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training import datasets
from training.__main__ import main
from training.evaluate import REPORT_NAME, SWEEP_TARGETS, evaluate
from training.train import train


@pytest.fixture
def report(tiny_data_dir: Path, tmp_path: Path) -> tuple[dict[str, object], Path]:
    artifact = tmp_path / "artifact"
    train(tiny_data_dir, artifact, seed=5)
    report_dir = tmp_path / "report"
    return evaluate(tiny_data_dir, artifact, report_dir), report_dir


def test_evaluate_writes_markdown_json_and_plot(
    report: tuple[dict[str, object], Path],
) -> None:
    _, report_dir = report

    assert (report_dir / f"{REPORT_NAME}.md").read_text().startswith("# Complexity")
    assert (report_dir / f"{REPORT_NAME}.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((report_dir / f"{REPORT_NAME}.json").read_text())
    assert saved["data_fingerprint_matches"] is True


def test_evaluate_scores_routing_against_baselines(
    report: tuple[dict[str, object], Path],
) -> None:
    result, _ = report
    routing = result["routing"]
    assert isinstance(routing, dict)
    baselines = routing["baselines"]

    assert set(baselines) == {
        "always_simple",
        "always_medium",
        "always_complex",
        "oracle",
        "random_same_cost",
    }
    assert baselines["oracle"]["quality"] >= baselines["always_complex"]["quality"]
    assert routing["questions"] > 0
    assert len(routing["curve"]) > 100


def test_evaluate_reports_latency_quantiles(
    report: tuple[dict[str, object], Path], tiny_data_dir: Path
) -> None:
    result, _ = report
    latency = result["latency"]
    assert isinstance(latency, dict)
    test_split = datasets.split(datasets.load_all(tiny_data_dir))["test"]

    assert latency["calls"] == len(test_split)
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert len(latency["load_average_1m"]) == 2


def test_evaluate_states_calibration_target(
    report: tuple[dict[str, object], Path],
) -> None:
    _, report_dir = report

    markdown = (report_dir / f"{REPORT_NAME}.md").read_text()

    assert "Calibration target: best quality at no more than" in markdown


def test_evaluate_cli_rejects_missing_artifact(
    tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "evaluate",
            "--data-dir",
            str(tiny_data_dir),
            "--artifact-dir",
            str(tmp_path / "missing"),
            "--report-dir",
            str(tmp_path / "report"),
        ]
    )

    assert code == 2
    assert "make train" in capsys.readouterr().err


def test_evaluate_scores_each_target_on_test(
    report: tuple[dict[str, object], Path],
) -> None:
    result, _ = report
    sweep = result["target_sweep"]
    assert isinstance(sweep, list)

    assert len(sweep) == len(SWEEP_TARGETS)
    for row in sweep:
        assert 0.0 <= row["test"]["quality"] <= 1.0
        assert row["random_same_cost"]["cost_per_1k_usd"] == pytest.approx(
            row["test"]["cost_per_1k_usd"]
        )
