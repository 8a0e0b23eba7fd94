"""Percentiles, the load summary and the speed targets of the load benchmark.

Everything here is pure computation on latencies the benchmark measured, so the
tests check it without starting a server.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Paths as the report names them, in display order: the router's cache status of
# the response, or "error" for a call that failed.
PATHS = (
    "exact_hit",
    "semantic_hit",
    "shared",
    "miss",
    "unavailable",
    "bypassed",
    "error",
)
# A measured p50 may be at most this multiple of its floor.
TARGET_RATIO = 1.3


@dataclass(frozen=True)
class RequestRecord:
    """One Route call of a load run: the kind sent, the path served and the time."""

    kind: str
    path: str
    latency_ms: float
    error_code: str = ""


def percentile(values: Sequence[float], share: float) -> float:
    """Return the nearest-rank percentile of ``values`` at ``share`` (0 to 1).

    The result is one of the values: the smallest value such that at least
    ``share`` of all values are less than or equal to it.

    Raises:
        ValueError: ``values`` is empty or ``share`` is outside [0, 1].
    """
    if not values:
        raise ValueError("cannot take a percentile of no values")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1; got {share}")
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | int | None]:
    """Return count, p50, p95, p99, mean and max of ``values_ms`` (None if empty)."""
    summary: dict[str, float | int | None] = {"count": len(values_ms)}
    for name, share in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        summary[name] = percentile(values_ms, share) if values_ms else None
    summary["mean"] = sum(values_ms) / len(values_ms) if values_ms else None
    summary["max"] = max(values_ms) if values_ms else None
    return summary


def summarize_load(
    records: Sequence[RequestRecord], duration_s: float
) -> dict[str, Any]:
    """Summarize one load run: throughput, latency by path, kinds and errors.

    ``duration_s`` is the wall time from the first request sent to the last
    response received. Throughput counts successful calls only.
    """
    paths = Counter(record.path for record in records)
    answered = len(records) - paths["error"]
    by_kind: dict[str, dict[str, int]] = {}
    for record in records:
        kinds = by_kind.setdefault(record.kind, {})
        kinds[record.path] = kinds.get(record.path, 0) + 1
    return {
        "requests": len(records),
        "answered": answered,
        "duration_s": duration_s,
        "throughput_rps": answered / duration_s if duration_s > 0 else None,
        "paths": {path: paths[path] for path in PATHS},
        "latency_ms": {
            "all": latency_summary([r.latency_ms for r in records]),
            **{
                path: latency_summary([r.latency_ms for r in records if r.path == path])
                for path in PATHS
                if paths[path]
            },
        },
        "paths_by_kind": by_kind,
        "errors_by_code": dict(
            Counter(r.error_code for r in records if r.path == "error")
        ),
    }


@dataclass(frozen=True)
class SpeedTarget:
    """One speed target: a measured p50 against the floor built from its parts."""

    name: str
    measured_ms: float | None
    floor_ms: float | None
    floor_parts: str

    @property
    def ratio(self) -> float | None:
        """Measured p50 divided by the floor; None when either is missing."""
        if self.measured_ms is None or not self.floor_ms:
            return None
        return self.measured_ms / self.floor_ms

    @property
    def met(self) -> bool | None:
        """Whether the ratio is at most ``TARGET_RATIO``; None when not measured."""
        ratio = self.ratio
        return None if ratio is None else ratio <= TARGET_RATIO

    def as_dict(self) -> dict[str, Any]:
        """Return the target as JSON-ready values."""
        return {
            "name": self.name,
            "measured_p50_ms": self.measured_ms,
            "floor_ms": self.floor_ms,
            "floor_parts": self.floor_parts,
            "ratio": self.ratio,
            "limit": TARGET_RATIO,
            "met": self.met,
        }


def speed_targets(
    p50_ms: Mapping[str, float | None], model_latency_ms: float
) -> list[SpeedTarget]:
    """Compare the p50 of each Route path with its floor.

    ``p50_ms`` contains the p50 of each sample kind of the speed phase:
    ``router_round_trip`` and ``cache_round_trip`` (empty health Checks),
    ``embedding`` and ``search`` (timed in the benchmark process), and
    ``exact_hit``, ``semantic_hit`` and ``miss`` (Route calls). The miss
    overhead is the miss p50 minus ``model_latency_ms``, the simulator's
    configured delay. Its floor is what any miss must do: three round trips
    (client to router, router to cache for the lookup, and again for the store),
    one embedding and one search. Each floor adds p50s, which approximates the
    p50 of the sum.
    """

    def total(*names: str) -> float | None:
        parts = [p50_ms.get(name) for name in names]
        if any(part is None for part in parts):
            return None
        return sum(part for part in parts if part is not None)

    round_trips = total("router_round_trip", "cache_round_trip")
    cache_trip = p50_ms.get("cache_round_trip")
    semantic_floor = total(
        "router_round_trip", "cache_round_trip", "embedding", "search"
    )
    miss_floor = None
    if semantic_floor is not None and cache_trip is not None:
        miss_floor = semantic_floor + cache_trip
    miss = p50_ms.get("miss")
    return [
        SpeedTarget(
            "exact hit",
            p50_ms.get("exact_hit"),
            round_trips,
            "client-router round trip + router-cache round trip",
        ),
        SpeedTarget(
            "semantic hit",
            p50_ms.get("semantic_hit"),
            semantic_floor,
            "two round trips + one embedding + one search",
        ),
        SpeedTarget(
            "miss overhead (model time excluded)",
            None if miss is None else miss - model_latency_ms,
            miss_floor,
            "three round trips (client-router, lookup, store) + one embedding "
            "+ one search",
        ),
    ]
