"""Summarize a replay's per-query results into a report, as JSON and Markdown."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.replay_plan import PlannedQuery

# Cache statuses as the report names them, in display order. "error" is a failed call.
# "shared": a concurrent identical miss that waited for another request's model call.
STATUSES = (
    "exact_hit",
    "semantic_hit",
    "shared",
    "miss",
    "unavailable",
    "bypassed",
    "error",
)
TIERS = ("simple", "medium", "complex")
PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class QueryResult:
    """The outcome of one Route call. Latency is measured by the client, in ms."""

    query: PlannedQuery
    cache_status: str
    latency_ms: float
    tier: str = ""
    model: str = ""
    similarity: float = 0.0
    cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0
    cache_entry_id: str = ""
    error_code: str = ""


def summarize(results: Sequence[QueryResult], run: dict[str, Any]) -> dict[str, Any]:
    """Build the report: hit rates, semantic-hit labels, tier mix, cost and latency.

    `run` describes the run (settings, machine) and is copied into the report.
    """
    counts = Counter(result.cache_status for result in results)
    total = len(results)
    answered = total - counts["error"]
    cost = sum(result.cost_usd for result in results)
    baseline = sum(result.baseline_cost_usd for result in results)
    model_calls = [r for r in results if r.cache_status in ("miss", "unavailable")]
    return {
        "run": run,
        "queries": total,
        "cache_status": {status: counts[status] for status in STATUSES},
        "hit_rate": {
            "exact": _fraction(counts["exact_hit"], answered),
            "semantic": _fraction(counts["semantic_hit"], answered),
            "any": _fraction(counts["exact_hit"] + counts["semantic_hit"], answered),
            "miss": _fraction(counts["miss"], answered),
        },
        "semantic_hits_by_match": _label_semantic_hits(results),
        "tier_mix_of_model_calls": {
            tier: sum(1 for r in model_calls if r.tier == tier) for tier in TIERS
        },
        "cost_usd": {
            "total": cost,
            "baseline_complex_tier_no_cache": baseline,
            "saved": baseline - cost,
            "saved_fraction": _fraction(baseline - cost, baseline),
        },
        "latency_ms": {
            "all": _latency_summary([r.latency_ms for r in results]),
            **{
                status: _latency_summary(
                    [r.latency_ms for r in results if r.cache_status == status]
                )
                for status in STATUSES
                if counts[status]
            },
        },
        "errors": dict(Counter(r.error_code for r in results if r.error_code)),
    }


def _fraction(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _latency_summary(latencies_ms: list[float]) -> dict[str, float | int | None]:
    summary: dict[str, float | int | None] = {"count": len(latencies_ms)}
    values = np.asarray(latencies_ms, dtype=float)
    for percentile in PERCENTILES:
        summary[f"p{percentile}"] = (
            float(np.percentile(values, percentile)) if len(values) else None
        )
    summary["mean"] = float(values.mean()) if len(values) else None
    return summary


def _label_semantic_hits(results: Sequence[QueryResult]) -> dict[str, int]:
    """Count semantic hits by which stored question they matched.

    A hit that matched the other question of its own Quora pair carries the human
    label of that pair: a hit on a pair labelled "not duplicate" is a false hit. A
    hit on a question from another pair has no label.
    """
    stored_by = {
        r.cache_entry_id: r.query
        for r in results
        if r.cache_status == "miss" and r.cache_entry_id
    }
    labels: Counter[str] = Counter()
    for result in results:
        if result.cache_status != "semantic_hit":
            continue
        matched = stored_by.get(result.cache_entry_id)
        if matched is None:
            labels["entry_not_seen_in_replay"] += 1
        elif matched.pair_id != result.query.pair_id:
            labels["question_of_another_pair"] += 1
        elif result.query.is_duplicate:
            labels["pair_partner_labelled_duplicate"] += 1
        else:
            labels["pair_partner_labelled_not_duplicate"] += 1
    return dict(labels)


def render_markdown(report: dict[str, Any]) -> str:
    """Render the report as Markdown tables."""
    run = report["run"]
    lines = [
        f"# Replay: {report['queries']} Quora questions, {run['backend']} backend",
        "",
        f"{run['started_at']} on {run['machine']}; {run['pairs']} pairs, "
        f"{run['repeats']} exact repeats, seed {run['seed']}, "
        f"max_tokens {run['max_tokens']}, system prompt {run['system_prompt']!r}, "
        f"concurrency {run['concurrency']}, {run['duration_s']:.1f} s.",
        "",
        "| cache status | queries | share |",
        "|---|---:|---:|",
    ]
    statuses = report["cache_status"]
    for status in STATUSES:
        if statuses[status] or status in ("exact_hit", "semantic_hit", "miss"):
            share = _fraction(statuses[status], report["queries"])
            lines.append(f"| {status} | {statuses[status]} | {_percent(share)} |")

    lines += ["", "| semantic hit matched | hits |", "|---|---:|"]
    for label, count in sorted(report["semantic_hits_by_match"].items()):
        lines.append(f"| {label.replace('_', ' ')} | {count} |")

    lines += ["", "| tier (model calls) | calls |", "|---|---:|"]
    for tier, count in report["tier_mix_of_model_calls"].items():
        lines.append(f"| {tier} | {count} |")

    cost = report["cost_usd"]
    lines += [
        "",
        "| cost at list prices | USD |",
        "|---|---:|",
        f"| this run | {cost['total']:.6f} |",
        f"| all on the complex tier, no cache | "
        f"{cost['baseline_complex_tier_no_cache']:.6f} |",
        f"| saved | {cost['saved']:.6f} ({_percent(cost['saved_fraction'])}) |",
        "",
        "| latency (ms, client side) | count | p50 | p95 | p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for group, summary in report["latency_ms"].items():
        cells = " | ".join(_millis(summary[f"p{p}"]) for p in PERCENTILES)
        lines.append(f"| {group} | {summary['count']} | {cells} |")

    if report["errors"]:
        lines += ["", "| gRPC error | calls |", "|---|---:|"]
        lines += [f"| {code} | {n} |" for code, n in report["errors"].items()]
    return "\n".join(lines) + "\n"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _millis(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"
