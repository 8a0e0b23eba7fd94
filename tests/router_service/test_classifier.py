"""The committed complexity classifier: loading checks, decisions and odd input."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_service.classifier import (
    MANIFEST_FILE,
    MODEL_FILE,
    TIERS,
    ClassifierArtifactError,
    ComplexityClassifier,
    DecisionPolicy,
    default_artifact_dir,
    rule_for_query,
)


@pytest.fixture(scope="module")
def classifier() -> ComplexityClassifier:
    return ComplexityClassifier.load(default_artifact_dir())


@pytest.fixture
def artifact_copy(tmp_path: Path) -> Path:
    target = tmp_path / "complexity"
    shutil.copytree(default_artifact_dir(), target)
    return target


def _edit_manifest(directory: Path, **changes: object) -> None:
    path = directory / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_committed_artifact_loads(classifier: ComplexityClassifier) -> None:
    assert classifier.version
    assert classifier.manifest["labels"] == list(TIERS)


def test_predict_returns_distribution_over_tiers(
    classifier: ComplexityClassifier,
) -> None:
    prediction = classifier.predict("What is the capital of France?")

    assert prediction.tier in TIERS
    assert set(prediction.probabilities) == set(TIERS)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
    assert prediction.rule == "model"


def test_competition_maths_is_most_likely_complex(
    classifier: ComplexityClassifier,
) -> None:
    # The tier also depends on the calibrated policy, so this checks the model.
    prediction = classifier.predict(
        r"Let $f(x) = \sum_{k=1}^{n} \frac{1}{k(k+1)}$. Find the smallest integer $n$"
        r" such that $f(x) > \frac{99}{100}$ and prove that it is minimal."
    )

    probabilities = prediction.probabilities
    assert max(probabilities, key=probabilities.__getitem__) == "complex"
    assert probabilities["complex"] > 0.5


@pytest.mark.parametrize(
    ("query", "rule", "tier"),
    [
        pytest.param("", "empty", "simple", id="empty"),
        pytest.param(" \n\t ", "empty", "simple", id="whitespace"),
        pytest.param("Summarise this. " * 2000, "too_long", "complex", id="long"),
        pytest.param("法国的首都是哪里请详细说明", "non_english", "medium", id="zh"),
        pytest.param("Какая столица Франции?", "non_english", "medium", id="ru"),
        pytest.param(
            "def add(a, b):\n    return a + b;\n\nprint(add(1, 2))\n",
            "code_only",
            "complex",
            id="code",
        ),
    ],
)
def test_out_of_distribution_input_gets_fixed_tier(
    classifier: ComplexityClassifier, query: str, rule: str, tier: str
) -> None:
    prediction = classifier.predict(query)

    assert prediction.rule == rule
    assert prediction.tier == tier
    assert prediction.probabilities[tier] == 1.0
    assert sum(prediction.probabilities.values()) == 1.0


@pytest.mark.parametrize(
    "query",
    ["Où est la gare ?", "\x00\x01\x02", "🙂🙂🙂", "?" * 100, "a", "1 + 1"],
)
def test_odd_input_never_raises(classifier: ComplexityClassifier, query: str) -> None:
    prediction = classifier.predict(query)

    assert prediction.tier in TIERS
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)


@settings(max_examples=300, deadline=None)
@given(query=st.text(max_size=400))
def test_any_text_gets_a_tier(classifier: ComplexityClassifier, query: str) -> None:
    prediction = classifier.predict(query)

    assert prediction.tier in TIERS
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0)


FAST_PATH_QUERIES = [
    "What is the capital of France?",
    r"Solve $x^2 - 5x + 6 = 0$ and explain each step.",
    "Write a function to reverse a linked list in Rust.",
    "word " * 3000,
    "Où est la gare ?",
    "",
    "a",
    "def f(x):\n    return {x: [1, 2]};\n" * 40,
    "Why? " * 500 + "Because." * 300,
    "Ünïcödé wörds and 数字 123 mixed with English text, twice: 数字 123.",
]


def _pipeline_probabilities(
    classifier: ComplexityClassifier, queries: list[str]
) -> np.ndarray:
    pipeline = classifier._pipeline
    columns = [list(pipeline.classes_).index(tier) for tier in TIERS]
    return np.asarray(pipeline.predict_proba(queries))[:, columns]


def test_fast_path_matches_pipeline(classifier: ComplexityClassifier) -> None:
    queries = FAST_PATH_QUERIES + [
        f"Question {n}: how many {n * 7} apples fit in {n} boxes?" for n in range(50)
    ]

    assert classifier._linear is not None
    np.testing.assert_allclose(
        classifier.predict_probabilities(queries),
        _pipeline_probabilities(classifier, queries),
        atol=1e-9,
    )


@settings(max_examples=200, deadline=None)
@given(queries=st.lists(st.text(max_size=2500), min_size=1, max_size=5))
def test_fast_path_matches_pipeline_on_random_text(
    classifier: ComplexityClassifier, queries: list[str]
) -> None:
    np.testing.assert_allclose(
        classifier.predict_probabilities(queries),
        _pipeline_probabilities(classifier, queries),
        atol=1e-9,
    )


def test_predict_uses_fast_path_probabilities(
    classifier: ComplexityClassifier,
) -> None:
    query = "Explain how a hash map resolves collisions."

    prediction = classifier.predict(query)
    expected = _pipeline_probabilities(classifier, [query])[0]

    assert prediction.rule == "model"
    assert [prediction.probabilities[tier] for tier in TIERS] == pytest.approx(
        expected.tolist(), abs=1e-9
    )


def test_question_about_code_goes_to_model() -> None:
    assert rule_for_query("Why does this fail?\nx = [1, 2];\nprint(x[3])") is None


def test_predict_is_consistent_across_threads(
    classifier: ComplexityClassifier,
) -> None:
    queries = [f"How many legs do {n} spiders have in total?" for n in range(40)]
    expected = [classifier.predict(query) for query in queries]
    results: dict[int, list[object]] = {}

    def worker(index: int) -> None:
        results[index] = [classifier.predict(query) for query in queries]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for index in range(4):
        assert results[index] == expected


def test_load_rejects_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ClassifierArtifactError, match=r"not found.*make train"):
        ComplexityClassifier.load(tmp_path / "nothing")


def test_load_rejects_feature_version_mismatch(artifact_copy: Path) -> None:
    _edit_manifest(artifact_copy, feature_version="text-v0")

    with pytest.raises(
        ClassifierArtifactError, match=r"feature_version.*text-v0.*Retrain"
    ):
        ComplexityClassifier.load(artifact_copy)


def test_load_rejects_sklearn_version_mismatch(artifact_copy: Path) -> None:
    _edit_manifest(artifact_copy, sklearn_version="0.24.2")

    with pytest.raises(ClassifierArtifactError, match=r"sklearn_version.*'0\.24'"):
        ComplexityClassifier.load(artifact_copy)


def test_load_rejects_label_mismatch(artifact_copy: Path) -> None:
    _edit_manifest(artifact_copy, labels=["cheap", "expensive"])

    with pytest.raises(ClassifierArtifactError, match="labels"):
        ComplexityClassifier.load(artifact_copy)


def test_load_rejects_tampered_model_file(artifact_copy: Path) -> None:
    with (artifact_copy / MODEL_FILE).open("ab") as handle:
        handle.write(b"tampered")

    with pytest.raises(ClassifierArtifactError, match="does not match the SHA-256"):
        ComplexityClassifier.load(artifact_copy)


def test_load_rejects_corrupt_manifest(artifact_copy: Path) -> None:
    (artifact_copy / MANIFEST_FILE).write_text("{not json")

    with pytest.raises(ClassifierArtifactError, match="not valid JSON"):
        ComplexityClassifier.load(artifact_copy)


def test_load_rejects_non_skops_model_file(artifact_copy: Path) -> None:
    model = artifact_copy / MODEL_FILE
    model.write_bytes(b"not a zip file")
    _edit_manifest(artifact_copy, model_sha256=_sha256(model))

    with pytest.raises(ClassifierArtifactError, match="not a readable skops file"):
        ComplexityClassifier.load(artifact_copy)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("probabilities", "policy", "expected"),
    [
        pytest.param(
            {"simple": 0.5, "medium": 0.3, "complex": 0.2},
            DecisionPolicy(),
            "simple",
            id="argmax",
        ),
        pytest.param(
            {"simple": 0.4, "medium": 0.35, "complex": 0.25},
            DecisionPolicy(min_confidence=0.45),
            "medium",
            id="low-confidence-escalates",
        ),
        pytest.param(
            {"simple": 0.1, "medium": 0.1, "complex": 0.8},
            DecisionPolicy(min_confidence=0.99),
            "complex",
            id="complex-cannot-escalate",
        ),
        pytest.param(
            {"simple": 0.6, "medium": 0.1, "complex": 0.3},
            DecisionPolicy(complex_threshold=0.25, medium_threshold=0.5),
            "complex",
            id="complex-threshold",
        ),
        pytest.param(
            {"simple": 0.55, "medium": 0.25, "complex": 0.2},
            DecisionPolicy(complex_threshold=0.5, medium_threshold=0.4),
            "medium",
            id="medium-threshold",
        ),
        pytest.param(
            {"simple": 0.7, "medium": 0.2, "complex": 0.1},
            DecisionPolicy(complex_threshold=0.5, medium_threshold=0.4),
            "simple",
            id="below-thresholds",
        ),
        pytest.param(
            {"simple": 0.87, "medium": 0.04, "complex": 0.09},
            DecisionPolicy(0.45, 0.05, min_confidence=0.4),
            "medium",
            id="confident-threshold-decision-stays",
        ),
        pytest.param(
            {"simple": 0.2, "medium": 0.45, "complex": 0.35},
            DecisionPolicy(0.5, 0.5, min_confidence=0.5),
            "complex",
            id="unsure-threshold-decision-escalates",
        ),
    ],
)
def test_decision_policy(
    probabilities: dict[str, float], policy: DecisionPolicy, expected: str
) -> None:
    assert policy.decide(probabilities) == expected


def test_decision_policy_round_trips_json() -> None:
    policy = DecisionPolicy(0.4, 0.6, 0.5, {"max_cost_per_1k_requests_usd": 1.0})

    assert DecisionPolicy.from_json(policy.to_json()) == policy
