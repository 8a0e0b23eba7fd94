"""Rates of a pair replay: hit rate, false-hit rate and precision, with 95 % intervals.

One replay looks up every pair once at the lowest threshold of the sweep and keeps
whether it hit and the cosine it reported. ``rates_at`` turns those results into
the rates at any higher threshold. That gives the same result as a lookup at that
threshold only while each scope contains one entry, so the replay stores every pair
under its own tenant (see ``benchmarks.bench_cache_service``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

# Two-sided 95 % normal quantile.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class PairOutcome:
    """The result of looking up a pair's second query after its first was stored.

    ``similarity`` is the cosine the cache reported: 1.0 for an exact hit, and the
    candidate's cosine otherwise, also when the false-hit guard rejected it.
    """

    same_meaning: bool
    hit: bool
    similarity: float


@dataclass(frozen=True)
class Interval:
    """A proportion and its Wilson score interval (95 %)."""

    count: int
    total: int
    rate: float
    low: float
    high: float


@dataclass(frozen=True)
class Rates:
    """Hit rate on same-meaning pairs, false-hit rate on the others, and precision."""

    threshold: float
    hit_rate: Interval
    false_hit_rate: Interval
    precision: Interval

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(count: int, total: int, z: float = Z_95) -> Interval:
    """Return ``count / total`` with its Wilson score interval.

    Wilson stays inside [0, 1] and is sensible at 0 or ``total`` successes, where the
    normal approximation gives an interval of width zero. An empty sample gives a
    rate of 0 and the interval [0, 1].
    """
    if total == 0:
        return Interval(0, 0, 0.0, 0.0, 1.0)
    rate = count / total
    denominator = 1 + z * z / total
    centre = (rate + z * z / (2 * total)) / denominator
    margin = (
        z * math.sqrt(rate * (1 - rate) / total + z * z / (4 * total * total))
    ) / denominator
    return Interval(
        count, total, rate, max(0.0, centre - margin), min(1.0, centre + margin)
    )


def served_at(outcome: PairOutcome, threshold: float) -> bool:
    """Return whether the lookup would have served an answer at ``threshold``.

    A hit at the sweep's lowest threshold is a hit at any threshold up to its
    cosine. The guard's decision does not depend on the threshold, so a rejected
    candidate stays rejected, and a miss stays a miss.
    """
    return outcome.hit and outcome.similarity >= threshold


def rates_at(outcomes: Sequence[PairOutcome], threshold: float) -> Rates:
    """Count hits on same-meaning pairs and false hits on the rest at ``threshold``."""
    positives = [item for item in outcomes if item.same_meaning]
    negatives = [item for item in outcomes if not item.same_meaning]
    hits = sum(served_at(item, threshold) for item in positives)
    false_hits = sum(served_at(item, threshold) for item in negatives)
    return Rates(
        threshold=threshold,
        hit_rate=wilson_interval(hits, len(positives)),
        false_hit_rate=wilson_interval(false_hits, len(negatives)),
        precision=wilson_interval(hits, hits + false_hits),
    )


def sweep(outcomes: Sequence[PairOutcome], thresholds: Sequence[float]) -> list[Rates]:
    """Return the rates at each threshold, in the order given."""
    return [rates_at(outcomes, threshold) for threshold in thresholds]


def threshold_grid(low: float, high: float, step: float) -> list[float]:
    """Return thresholds from ``low`` to ``high`` inclusive, rounded to 4 decimals."""
    count = round((high - low) / step)
    return [round(low + index * step, 4) for index in range(count + 1)]


def percentile(samples: Sequence[float], share: float) -> float:
    """Return the nearest-rank percentile ``share`` (0 to 1) of ``samples``."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(0, math.ceil(share * len(ordered)) - 1)
    return ordered[rank]
