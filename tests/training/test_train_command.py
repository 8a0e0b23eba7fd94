"""End-to-end training on the tiny fixture data: artifact, manifest and CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from router_service.classifier import (
    MANIFEST_FILE,
    MODEL_FILE,
    TIERS,
    ComplexityClassifier,
)
from router_service.features import FEATURE_VERSION
from training import datasets
from training.__main__ import main
from training.routing import MAX_COST_TARGET, MIN_QUALITY_TARGET
from training.train import pick_winner, train


@pytest.fixture
def trained(tiny_data_dir: Path, tmp_path: Path) -> Path:
    output = tmp_path / "artifact"
    train(tiny_data_dir, output, seed=7)
    return output


def test_train_writes_model_and_manifest(trained: Path) -> None:
    assert sorted(path.name for path in trained.iterdir()) == [
        MANIFEST_FILE,
        MODEL_FILE,
    ]


def test_manifest_records_versions_and_data(trained: Path, tiny_data_dir: Path) -> None:
    manifest = json.loads((trained / MANIFEST_FILE).read_text())

    assert manifest["feature_version"] == FEATURE_VERSION
    assert manifest["labels"] == list(TIERS)
    assert manifest["data_fingerprint"] == datasets.data_fingerprint(tiny_data_dir)
    assert manifest["model_kind"] in {"logistic_regression", "gradient_boosting"}
    assert set(manifest["metrics"]["validation"]) == {
        "logistic_regression",
        "gradient_boosting",
    }
    assert 0.0 <= manifest["metrics"]["test"]["accuracy"] <= 1.0
    assert manifest["created_at"].endswith("+00:00")


def test_trained_artifact_loads_and_separates_tiers(trained: Path) -> None:
    classifier = ComplexityClassifier.load(trained)

    easy = classifier.predict("Which animal says moo on farm 9001?")
    hard = classifier.predict(
        "Write a lock-free queue in C++ for 9001 producers and explain the memory "
        "order."
    )

    # The tiny data calibrate thresholds on three questions, so the test checks the
    # most probable tier, not the calibrated decision.
    assert max(easy.probabilities, key=easy.probabilities.__getitem__) == "simple"
    assert max(hard.probabilities, key=hard.probabilities.__getitem__) == "complex"
    assert (
        classifier.version
        == json.loads((trained / MANIFEST_FILE).read_text())["version"]
    )


def test_training_is_deterministic(tiny_data_dir: Path, tmp_path: Path) -> None:
    first = train(tiny_data_dir, tmp_path / "a", seed=3)
    second = train(tiny_data_dir, tmp_path / "b", seed=3)

    first.test_metrics.pop("fit_seconds")
    second.test_metrics.pop("fit_seconds")
    assert first.test_metrics == second.test_metrics
    assert first.model_kind == second.model_kind
    assert first.manifest["decision_policy"] == second.manifest["decision_policy"]


def test_retraining_replaces_artifact(tiny_data_dir: Path, trained: Path) -> None:
    before = json.loads((trained / MANIFEST_FILE).read_text())["version"]
    train(tiny_data_dir, trained, seed=8)
    after = json.loads((trained / MANIFEST_FILE).read_text())["version"]

    assert after != before
    assert not list(trained.parent.glob(".staging-*"))
    assert not list(trained.parent.glob(".retired-*"))


def test_cli_trains_into_output_dir(
    tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "cli-artifact"

    code = main(
        ["train", "--data-dir", str(tiny_data_dir), "--output-dir", str(output)]
    )

    printed = capsys.readouterr().out
    assert code == 0
    assert (output / MANIFEST_FILE).is_file()
    assert "macro-F1" in printed
    assert "confusion matrix" in printed


def test_cli_calibrates_for_requested_quality(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "quality-artifact"

    code = main(
        [
            "train",
            "--data-dir",
            str(tiny_data_dir),
            "--output-dir",
            str(output),
            "--min-quality",
            "0.9",
        ]
    )

    target = json.loads((output / MANIFEST_FILE).read_text())["decision_policy"]
    assert code == 0
    assert target["target"]["kind"] == MIN_QUALITY_TARGET
    assert target["target"]["value"] == 0.9


def test_default_target_is_always_medium_cost(trained: Path) -> None:
    policy = json.loads((trained / MANIFEST_FILE).read_text())["decision_policy"]

    # The grid contains always-medium, so the default target is always met.
    assert policy["target"]["kind"] == MAX_COST_TARGET
    assert policy["target"]["reached"] is True
    assert policy["complex_threshold"] is not None


def test_cli_rejects_out_of_range_quality(
    tiny_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--data-dir", str(tiny_data_dir), "--min-quality", "2"])

    assert code == 2
    assert "in (0, 1]; got 2.0" in capsys.readouterr().err


def test_cli_rejects_both_targets(tiny_data_dir: Path) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "train",
                "--data-dir",
                str(tiny_data_dir),
                "--min-quality",
                "0.9",
                "--max-cost-per-1k",
                "1",
            ]
        )


def test_cli_reports_missing_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--data-dir", str(tmp_path / "nowhere")])

    assert code == 2
    assert "Pass --data-dir" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        pytest.param({"first": 0.740, "second": 0.744}, "first", id="tie-to-first"),
        pytest.param({"first": 0.730, "second": 0.744}, "second", id="clear-win"),
        pytest.param({"first": 0.750, "second": 0.744}, "first", id="first-best"),
    ],
)
def test_pick_winner_prefers_first_listed_on_ties(
    scores: dict[str, float], expected: str
) -> None:
    validation = {name: {"macro_f1": value} for name, value in scores.items()}

    assert pick_winner(validation) == expected


def test_gradient_boosting_artifact_loads(tiny_data_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "trees"
    train(tiny_data_dir, output, seed=4, candidates=("gradient_boosting",))

    classifier = ComplexityClassifier.load(output)

    assert classifier.manifest["model_kind"] == "gradient_boosting"
    assert classifier.predict("Which animal says moo on farm 77?").tier in TIERS


def test_calibrate_replaces_policy_and_keeps_model(
    trained: Path, tiny_data_dir: Path
) -> None:
    before = json.loads((trained / MANIFEST_FILE).read_text())
    model_bytes = (trained / MODEL_FILE).read_bytes()

    code = main(
        [
            "calibrate",
            "--data-dir",
            str(tiny_data_dir),
            "--artifact-dir",
            str(trained),
            "--min-quality",
            "0.9",
        ]
    )

    after = json.loads((trained / MANIFEST_FILE).read_text())
    assert code == 0
    assert after["decision_policy"]["target"]["kind"] == MIN_QUALITY_TARGET
    assert after["version"] != before["version"]
    assert after["model_sha256"] == before["model_sha256"]
    assert (trained / MODEL_FILE).read_bytes() == model_bytes
    assert sorted(path.name for path in trained.iterdir()) == [
        MANIFEST_FILE,
        MODEL_FILE,
    ]
    assert ComplexityClassifier.load(trained).version == after["version"]


def test_calibrate_rejects_other_data(
    trained: Path,
    tiny_data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = tmp_path / "other-data"
    shutil.copytree(tiny_data_dir, other)
    with (other / "arena_hard" / "arena_hard_v0.1_questions.jsonl").open("a") as handle:
        handle.write('{"prompt": "One more hard prompt about compilers."}\n')

    code = main(["calibrate", "--data-dir", str(other), "--artifact-dir", str(trained)])

    assert code == 2
    assert "differ from the data" in capsys.readouterr().err
