"""Train the complexity classifier: label, split, compare candidates, save the best.

Every candidate is fitted on the train split and scored on the validation split by
macro-F1. The winner's decision thresholds are calibrated on the validation split,
and it is scored once on the test split, whose numbers go to the console and the
manifest.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from router_service.classifier import (
    TIERS,
    ClassifierArtifactError,
    ComplexityClassifier,
    DecisionPolicy,
)
from training import datasets
from training.artifact import replace_policy, write_artifact
from training.datasets import LabelledQuery
from training.metrics import classification_metrics, format_metrics
from training.models import CANDIDATES
from training.routing import CalibrationTarget, RoutingTable, calibrate, is_routable

DEFAULT_SEED = 20240809

# Macro-F1 differences below this are within the validation split's noise: the
# standard error of accuracy on its 3,188 questions is about 0.008, and macro-F1
# varies at least as much.
MACRO_F1_TIE = 0.005


@dataclass(frozen=True)
class TrainingResult:
    """Output of a training run: the winner, its scores and the manifest."""

    model_kind: str
    validation_scores: dict[str, dict[str, Any]]
    test_metrics: dict[str, Any]
    manifest: dict[str, Any]


def texts_and_tiers(items: list[LabelledQuery]) -> tuple[list[str], list[str]]:
    """Split labelled queries into parallel lists of texts and tier labels."""
    return [item.text for item in items], [item.tier for item in items]


def fit_and_score(
    pipeline: Pipeline, train: list[LabelledQuery], score_on: list[LabelledQuery]
) -> dict[str, Any]:
    """Fit `pipeline` on `train` and return its metrics on `score_on`."""
    texts, tiers = texts_and_tiers(train)
    started = time.perf_counter()
    pipeline.fit(texts, tiers)
    fit_seconds = time.perf_counter() - started
    score_texts, expected = texts_and_tiers(score_on)
    metrics = classification_metrics(expected, list(pipeline.predict(score_texts)))
    metrics["fit_seconds"] = round(fit_seconds, 1)
    return metrics


def pick_winner(validation_scores: dict[str, dict[str, Any]]) -> str:
    """Return the candidate with the best validation macro-F1.

    Candidates within MACRO_F1_TIE of the best count as tied, and the tie goes to
    the one listed first in `validation_scores` (CANDIDATES order puts logistic
    regression first, because the router scores it without scikit-learn's
    per-call overhead).
    """
    best = max(scores["macro_f1"] for scores in validation_scores.values())
    return next(
        name
        for name, scores in validation_scores.items()
        if scores["macro_f1"] >= best - MACRO_F1_TIE
    )


def describe_labels(items: list[LabelledQuery]) -> str:
    """Summarise the tier counts per source as a text table."""
    counts = collections.Counter((item.source, item.tier) for item in items)
    sources = sorted({item.source for item in items})
    lines = [f"{'source':<28}" + "".join(f"{tier:>9}" for tier in TIERS)]
    for source in sources:
        cells = "".join(f"{counts[(source, tier)]:>9d}" for tier in TIERS)
        lines.append(f"{source:<28}{cells}")
    return "\n".join(lines)


def calibrate_policy(
    pipeline: Pipeline,
    validation: list[LabelledQuery],
    target: CalibrationTarget | None = None,
) -> DecisionPolicy:
    """Calibrate decision thresholds on the routable validation questions.

    `pipeline` must not have seen the validation split, so that its probabilities
    there are as uncertain as on new queries.
    """
    table = RoutingTable.from_items(validation)
    routable = [item.text for item in validation if is_routable(item)]
    if not routable:
        print("no routable validation questions: keeping the most probable tier")
        return DecisionPolicy()
    probabilities = probabilities_in_tier_order(pipeline, routable)
    policy = calibrate(table, probabilities, target)
    print(
        f"calibrated thresholds on {len(table)} validation questions: "
        f"complex >= {policy.complex_threshold}, medium >= {policy.medium_threshold}, "
        f"min confidence {policy.min_confidence}, target {policy.target}"
    )
    if not policy.target["reached"]:
        print("warning: no threshold policy meets the target; kept the nearest one")
    return policy


def recalibrate(
    data_dir: Path, artifact_dir: Path, target: CalibrationTarget | None = None
) -> DecisionPolicy:
    """Calibrate a new decision policy for a trained artifact, without refitting.

    The policy is chosen on the validation split, as in training, and replaces
    the one in the artifact's manifest (`training.artifact.replace_policy`).

    Raises:
        ClassifierArtifactError: the artifact does not load, or `data_dir` contains
            other data than the artifact was trained on, so its validation split
            could overlap the training rows.
        FileNotFoundError: a data file is missing.
    """
    classifier = ComplexityClassifier.load(artifact_dir)
    if datasets.data_fingerprint(data_dir) != classifier.manifest["data_fingerprint"]:
        raise ClassifierArtifactError(
            f"the data in {data_dir} differ from the data that the artifact in "
            f"{artifact_dir} was trained on, so its validation split may overlap "
            "the training rows. Retrain with `make train` instead."
        )
    validation = datasets.split(datasets.load_all(data_dir))["validation"]
    routable = [item for item in validation if is_routable(item)]
    if not routable:
        raise ClassifierArtifactError(
            f"the validation split of {data_dir} has no question with outcomes "
            "and costs for every tier, so there is nothing to calibrate on."
        )
    probabilities = classifier.predict_probabilities([item.text for item in routable])
    policy = calibrate(RoutingTable.from_items(routable), probabilities, target)
    manifest = replace_policy(artifact_dir, policy)
    print(
        f"calibrated {artifact_dir} for {policy.target}; thresholds complex >= "
        f"{policy.complex_threshold}, medium >= {policy.medium_threshold}, min "
        f"confidence {policy.min_confidence}; version {manifest['version']}"
    )
    if not policy.target["reached"]:
        print("warning: no threshold policy meets the target; kept the nearest one")
    return policy


def probabilities_in_tier_order(
    pipeline: Pipeline, texts: list[str]
) -> NDArray[np.float64]:
    """Return `predict_proba` with columns reordered to TIERS."""
    raw = pipeline.predict_proba(texts)
    classes = [str(name) for name in pipeline.classes_]
    return np.asarray(raw[:, [classes.index(tier) for tier in TIERS]], dtype=np.float64)


def train(
    data_dir: Path,
    output_dir: Path,
    *,
    seed: int = DEFAULT_SEED,
    candidates: tuple[str, ...] = tuple(CANDIDATES),
    target: CalibrationTarget | None = None,
) -> TrainingResult:
    """Run the whole training and write the artifact to `output_dir`.

    `target` is the calibration target of the decision thresholds (default: the
    best quality at no more than the always-medium cost).

    Raises:
        FileNotFoundError: a data file is missing under `data_dir`.
        KeyError: a candidate name is not in CANDIDATES.
    """
    # NOTE: one OpenMP thread. On a shared 2-core machine (load average 10),
    # HistGradientBoosting fitted about 10 times slower with two threads than one.
    with threadpool_limits(limits=1):
        return _train(data_dir, output_dir, seed, candidates, target)


def _train(
    data_dir: Path,
    output_dir: Path,
    seed: int,
    candidates: tuple[str, ...],
    target: CalibrationTarget | None,
) -> TrainingResult:
    items = datasets.load_all(data_dir)
    groups = datasets.split(items)
    print(f"{len(items)} labelled questions after de-duplication")
    print(describe_labels(items))
    print("split sizes: " + ", ".join(f"{k} {len(v)}" for k, v in groups.items()))

    validation_scores: dict[str, dict[str, Any]] = {}
    fitted: dict[str, Pipeline] = {}
    for name in candidates:
        fitted[name] = CANDIDATES[name](seed)
        scores = fit_and_score(fitted[name], groups["train"], groups["validation"])
        validation_scores[name] = scores
        print(
            f"validation {name:<20} accuracy {scores['accuracy']:.3f} "
            f"macro-F1 {scores['macro_f1']:.3f} (fit {scores['fit_seconds']} s)"
        )
    winner = pick_winner(validation_scores)
    print(f"kept {winner} (best validation macro-F1, ties go to the faster model)")
    policy = calibrate_policy(fitted[winner], groups["validation"], target)

    # The winner is not refitted on train plus validation: the thresholds were
    # calibrated on its validation probabilities, and a refit would shift them.
    final = fitted[winner]
    test_texts, test_tiers = texts_and_tiers(groups["test"])
    test_metrics = classification_metrics(test_tiers, list(final.predict(test_texts)))
    test_metrics["fit_seconds"] = validation_scores[winner]["fit_seconds"]
    print("held-out test split:")
    print(format_metrics(test_metrics))

    manifest = write_artifact(
        final,
        output_dir,
        {
            "model_kind": winner,
            "data_fingerprint": datasets.data_fingerprint(data_dir),
            "metrics": {"test": test_metrics, "validation": validation_scores},
            "policy": policy,
            "training": {
                "seed": seed,
                "split_sizes": {name: len(group) for name, group in groups.items()},
                "label_counts": dict(collections.Counter(item.tier for item in items)),
            },
        },
    )
    print(f"wrote {output_dir} version {manifest['version']}")
    return TrainingResult(winner, validation_scores, test_metrics, manifest)
