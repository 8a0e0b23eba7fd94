"""Evaluate a classifier artifact on the held-out test split and write a report.

The report has classification metrics, the routing outcome on the test questions
that record every tier's outcome and cost, the same for fixed, random and oracle
routing, a cost-quality curve over the decision thresholds, and the latency of
`ComplexityClassifier.predict`. It is written as Markdown, JSON and a PNG plot.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from router_service.classifier import TIERS, ComplexityClassifier
from training import datasets
from training.metrics import classification_metrics, format_metrics
from training.routing import (
    MAX_COST_TARGET,
    MIN_QUALITY_TARGET,
    CalibrationTarget,
    RoutingTable,
    baselines,
    calibrate,
    decide_all,
    is_routable,
    score_choices,
    threshold_curve,
)

WARMUP_CALLS = 200
REPORT_NAME = "classifier-evaluation"


def measure_latency_ms(
    classifier: ComplexityClassifier, queries: list[str]
) -> dict[str, Any]:
    """Time `predict` once per query on one thread and return quantiles in ms.

    The first WARMUP_CALLS calls warm caches and are not counted. Wall-clock time
    includes waits for a CPU when other processes run, so the thread's CPU time is
    recorded too, and so is the load average before and after.
    """
    with threadpool_limits(limits=1):
        for query in queries[:WARMUP_CALLS]:
            classifier.predict(query)
        load_before = os.getloadavg()[0]
        timings, cpu_timings = [], []
        for query in queries:
            started, cpu_started = time.perf_counter(), time.thread_time()
            classifier.predict(query)
            cpu_timings.append((time.thread_time() - cpu_started) * 1000)
            timings.append((time.perf_counter() - started) * 1000)
    values = np.asarray(timings)
    cpu_values = np.asarray(cpu_timings)
    return {
        "calls": len(values),
        "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)),
        "p99_ms": float(np.percentile(values, 99)),
        "p999_ms": float(np.percentile(values, 99.9)),
        "max_ms": float(values.max()),
        "cpu_p50_ms": float(np.percentile(cpu_values, 50)),
        "cpu_p99_ms": float(np.percentile(cpu_values, 99)),
        "load_average_1m": [load_before, os.getloadavg()[0]],
    }


def routing_report(
    classifier: ComplexityClassifier, test: list[datasets.LabelledQuery]
) -> dict[str, Any]:
    """Score the classifier's routing against the baselines on routable questions."""
    routable = [item for item in test if is_routable(item)]
    table = RoutingTable.from_items(routable)
    probabilities = classifier.predict_probabilities([item.text for item in routable])
    choices = np.asarray(
        [TIERS.index(classifier.predict(item.text).tier) for item in routable]
    )
    ours = score_choices(table, choices).to_json()
    return {
        "questions": len(table),
        "classifier": ours,
        "classifier_tier_share": {
            tier: float((choices == index).mean()) for index, tier in enumerate(TIERS)
        },
        "classifier_most_probable_tier": score_choices(
            table, probabilities.argmax(axis=1)
        ).to_json(),
        "baselines": baselines(table, ours["cost_per_1k_usd"]),
        "curve": threshold_curve(table, probabilities),
    }


# Targets compared by `target_sweep`: each is calibrated on the validation split
# and scored on the test split.
SWEEP_TARGETS = (
    CalibrationTarget(MAX_COST_TARGET, None),
    CalibrationTarget(MAX_COST_TARGET, 1.0),
    CalibrationTarget(MIN_QUALITY_TARGET, 0.85),
    CalibrationTarget(MIN_QUALITY_TARGET, 0.9),
    CalibrationTarget(MIN_QUALITY_TARGET, 0.95),
)


def target_sweep(
    classifier: ComplexityClassifier,
    validation: list[datasets.LabelledQuery],
    test: list[datasets.LabelledQuery],
) -> list[dict[str, Any]]:
    """Calibrate each of SWEEP_TARGETS on validation and score it on test.

    Each row also contains random routing at the test cost, so a reader can see
    whether the thresholds chosen on one split keep their value on another. The
    fixed-tier rules are left out here: both sides see model probabilities only.
    """
    valid_items = [item for item in validation if is_routable(item)]
    test_items = [item for item in test if is_routable(item)]
    if not valid_items or not test_items:
        return []
    valid_table = RoutingTable.from_items(valid_items)
    test_table = RoutingTable.from_items(test_items)
    valid_probabilities = classifier.predict_probabilities(
        [item.text for item in valid_items]
    )
    test_probabilities = classifier.predict_probabilities(
        [item.text for item in test_items]
    )
    rows = []
    for target in SWEEP_TARGETS:
        policy = calibrate(valid_table, valid_probabilities, target)
        outcome = score_choices(test_table, decide_all(test_probabilities, policy))
        random = baselines(test_table, outcome.cost_per_1k_usd)["random_same_cost"]
        rows.append(
            {
                "target": policy.target,
                "policy": policy.to_json(),
                "test": outcome.to_json(),
                "random_same_cost": random,
            }
        )
    return rows


def evaluate(data_dir: Path, artifact_dir: Path, report_dir: Path) -> dict[str, Any]:
    """Evaluate the artifact, print the report and write it into `report_dir`.

    Raises:
        ClassifierArtifactError: the artifact does not load.
        FileNotFoundError: a data file is missing.
    """
    classifier = ComplexityClassifier.load(artifact_dir)
    fingerprint = datasets.data_fingerprint(data_dir)
    if fingerprint != classifier.manifest.get("data_fingerprint"):
        print("warning: the data differ from the data this artifact was trained on")
    groups = datasets.split(datasets.load_all(data_dir))
    test = groups["test"]

    # Classification scores the model's most probable tier, as training does. The
    # calibrated policy and the fixed rules are scored by the routing section.
    probabilities = classifier.predict_probabilities([item.text for item in test])
    predicted = [TIERS[index] for index in probabilities.argmax(axis=1)]
    report: dict[str, Any] = {
        "artifact_version": classifier.version,
        "model_kind": classifier.manifest.get("model_kind"),
        "decision_policy": classifier.policy.to_json(),
        "data_fingerprint_matches": fingerprint
        == classifier.manifest.get("data_fingerprint"),
        "classification": classification_metrics(
            [item.tier for item in test], predicted
        ),
        "routing": routing_report(classifier, test),
        "target_sweep": target_sweep(classifier, groups["validation"], test),
        "latency": measure_latency_ms(classifier, [item.text for item in test]),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
    }
    report_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(report)
    print(markdown)
    (report_dir / f"{REPORT_NAME}.md").write_text(markdown, encoding="utf-8")
    (report_dir / f"{REPORT_NAME}.json").write_text(
        json.dumps(report, indent=2) + "\n", encoding="utf-8"
    )
    plot_curve(report["routing"], report_dir / f"{REPORT_NAME}.png")
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """Render the report as Markdown."""
    routing = report["routing"]
    lines = [
        "# Complexity classifier: held-out evaluation",
        "",
        f"Artifact `{report['artifact_version']}` ({report['model_kind']}), "
        f"decision policy `{json.dumps(report['decision_policy'])}`.",
        "",
        "## Classification (test split)",
        "",
        "```",
        format_metrics(report["classification"]),
        "```",
        "",
        f"## Routing ({routing['questions']} RouterBench test questions)",
        "",
        "| policy | quality | USD per 1k requests |",
        "|---|---|---|",
    ]
    rows = {
        "classifier (calibrated policy)": routing["classifier"],
        "classifier (most probable tier)": routing["classifier_most_probable_tier"],
        **routing["baselines"],
    }
    for name, outcome in rows.items():
        lines.append(
            f"| {name} | {outcome['quality']:.3f} | {outcome['cost_per_1k_usd']:.3f} |"
        )
    share = ", ".join(
        f"{tier} {value:.0%}"
        for tier, value in routing["classifier_tier_share"].items()
    )
    latency = report["latency"]
    load = latency["load_average_1m"]
    lines += [
        "",
        f"Tier mix of the classifier: {share}.",
        "",
        describe_target(report["decision_policy"]),
        "",
        *render_sweep(report["target_sweep"]),
        "## Latency of `predict` (one thread)",
        "",
        f"p50 {latency['p50_ms']:.3f} ms, p90 {latency['p90_ms']:.3f} ms, "
        f"p99 {latency['p99_ms']:.3f} ms, p99.9 {latency['p999_ms']:.3f} ms, "
        f"max {latency['max_ms']:.3f} ms over {latency['calls']} calls, one per "
        f"test question, on {report['machine']}; 1-minute load average "
        f"{load[0]:.1f} before and {load[1]:.1f} after. Thread CPU time per call: "
        f"p50 {latency['cpu_p50_ms']:.3f} ms, p99 {latency['cpu_p99_ms']:.3f} ms.",
        "",
    ]
    return "\n".join(lines)


def render_sweep(rows: list[dict[str, Any]]) -> list[str]:
    """Render the target sweep as a Markdown section (empty without rows)."""
    if not rows:
        return []
    lines = [
        "## Calibration targets (chosen on validation, scored on test)",
        "",
        "| target | limit | met on validation | test quality | test USD per 1k "
        "| random at that cost |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        target = row["target"]
        value = "always-medium cost" if target["value"] is None else target["value"]
        lines.append(
            f"| {target['kind']} = {value} | {target['limit']:.3f} "
            f"| {'yes' if target['reached'] else 'no'} "
            f"| {row['test']['quality']:.3f} | {row['test']['cost_per_1k_usd']:.3f} "
            f"| {row['random_same_cost']['quality']:.3f} |"
        )
    return [*lines, ""]


def describe_target(policy: dict[str, Any]) -> str:
    """Describe the calibration target and whether the validation split met it."""
    target = policy.get("target", {})
    if target.get("kind") == MAX_COST_TARGET:
        goal = f"best quality at no more than {target['limit']:.3f} USD per 1k requests"
    elif target.get("kind") == MIN_QUALITY_TARGET:
        goal = f"lowest cost with quality at least {target['limit']:.3f}"
    else:
        return "The artifact records no calibration target."
    reached = "met" if target.get("reached") else "not met (nearest grid point kept)"
    return (
        f"Calibration target: {goal}, on {target['calibration_questions']} "
        f"validation questions: {reached}, with quality "
        f"{target['calibration_quality']:.3f} at "
        f"{target['calibration_cost_per_1k_usd']:.3f} USD per 1k requests there."
    )


def plot_curve(routing: dict[str, Any], path: Path) -> None:
    """Draw the threshold grid's cost-quality points and the baselines into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 5))
    curve = routing["curve"]
    axes.scatter(
        [point["cost_per_1k_usd"] for point in curve],
        [point["quality"] for point in curve],
        s=6,
        alpha=0.4,
        label="classifier, threshold grid",
    )
    base = routing["baselines"]
    simple, complex_ = base["always_simple"], base["always_complex"]
    axes.plot(
        [simple["cost_per_1k_usd"], complex_["cost_per_1k_usd"]],
        [simple["quality"], complex_["quality"]],
        linestyle="--",
        color="grey",
        label="random simple/complex mix",
    )
    markers = {**base, "classifier (calibrated)": routing["classifier"]}
    for name, outcome in markers.items():
        if name == "random_same_cost":
            continue
        axes.scatter(outcome["cost_per_1k_usd"], outcome["quality"], s=40)
        axes.annotate(name, (outcome["cost_per_1k_usd"], outcome["quality"]))
    axes.set_xlabel("USD per 1,000 requests (RouterBench recorded cost)")
    axes.set_ylabel("fraction answered correctly")
    axes.set_title("Cost-quality trade-off on held-out RouterBench questions")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
