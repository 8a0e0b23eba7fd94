"""Classification metrics for tier predictions, as JSON-ready values and text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from router_service.classifier import TIERS


def classification_metrics(
    expected: Sequence[str], predicted: Sequence[str]
) -> dict[str, Any]:
    """Compute accuracy, macro-F1, per-tier precision/recall/F1 and the confusion.

    The confusion matrix has one row per expected tier and one column per predicted
    tier, both in TIERS order.
    """
    labels = list(TIERS)
    precision, recall, f1, support = precision_recall_fscore_support(
        expected, predicted, labels=labels, zero_division=0
    )
    per_tier = {
        tier: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, tier in enumerate(labels)
    }
    matrix = confusion_matrix(expected, predicted, labels=labels)
    return {
        "count": len(expected),
        "accuracy": float(accuracy_score(expected, predicted)),
        "macro_f1": float(
            f1_score(expected, predicted, labels=labels, average="macro")
        ),
        "per_tier": per_tier,
        "confusion_matrix": matrix.tolist(),
    }


def format_metrics(metrics: dict[str, Any]) -> str:
    """Render metrics from `classification_metrics` as a plain-text block."""
    lines = [
        f"accuracy {metrics['accuracy']:.3f}   macro-F1 {metrics['macro_f1']:.3f}   "
        f"({metrics['count']} questions)",
        "",
        f"{'tier':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for tier, values in metrics["per_tier"].items():
        lines.append(
            f"{tier:<10}{values['precision']:>10.3f}{values['recall']:>10.3f}"
            f"{values['f1']:>10.3f}{values['support']:>10d}"
        )
    lines += ["", "confusion matrix (rows: expected, columns: predicted)"]
    lines.append(" " * 10 + "".join(f"{tier:>10}" for tier in TIERS))
    for tier, row in zip(TIERS, metrics["confusion_matrix"], strict=True):
        lines.append(f"{tier:<10}" + "".join(f"{count:>10d}" for count in row))
    return "\n".join(lines)
