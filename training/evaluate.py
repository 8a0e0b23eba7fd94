"""Evaluate a classifier artifact on the held-out test split and write a report.

The report has classification metrics, the routing outcome on the test questions
that record every tier's outcome and cost, the same for fixed, random and oracle
routing, a cost-quality curve over the decision thresholds, and the latency of
`ComplexityClassifier.predict`. It is written as Markdown, JSON and a PNG plot.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from router_service.classifier import TIERS, ComplexityClassifier
from training import datasets
from training.metrics import classification_metrics, format_metrics
from training.routing import (
    RoutingTable,
    baselines,
    is_routable,
    score_choices,
    threshold_curve,
)

LATENCY_CALLS = 2000
REPORT_NAME = "classifier-evaluation"


def measure_latency_ms(
    classifier: ComplexityClassifier, queries: list[str], calls: int = LATENCY_CALLS
) -> dict[str, float]:
    """Time `predict` on one thread, cycling through `queries`, and return quantiles.

    The first 100 calls warm caches and are not counted.
    """
    for query in queries[:100]:
        classifier.predict(query)
    timings = []
    for index in range(calls):
        query = queries[index % len(queries)]
        started = time.perf_counter()
        classifier.predict(query)
        timings.append((time.perf_counter() - started) * 1000)
    values = np.asarray(timings)
    return {
        "calls": calls,
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
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
    test = datasets.split(datasets.load_all(data_dir))["test"]

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
    lines += [
        "",
        f"Tier mix of the classifier: {share}.",
        "",
        "## Latency of `predict` (one thread)",
        "",
        f"p50 {latency['p50_ms']:.3f} ms, p95 {latency['p95_ms']:.3f} ms, "
        f"p99 {latency['p99_ms']:.3f} ms over {latency['calls']} calls "
        f"on {report['machine']}.",
        "",
    ]
    return "\n".join(lines)


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
