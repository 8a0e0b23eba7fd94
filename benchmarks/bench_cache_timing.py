"""Lookup latency and throughput with N concurrent clients, for any lookup function.

Used for our cache over gRPC and for GPTCache in its own environment, so this
module imports only the standard library and ``bench_cache_stats``. A client is a
thread that sends one lookup at a time and waits for it, and the clients share one
list of queries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.bench_cache_stats import percentile


@dataclass(frozen=True)
class SpeedResult:
    """Lookups completed by ``clients`` concurrent clients, with latency percentiles."""

    clients: int
    lookups: int
    errors: int
    hits: int
    wall_s: float
    lookups_per_s: float
    p50_ms: float
    p99_ms: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def measure_clients(
    lookup: Callable[[str], bool], queries: Sequence[str], clients: int
) -> SpeedResult:
    """Send every query once from ``clients`` threads and time each lookup.

    ``lookup`` returns whether the query hit. An exception counts as an error, and
    its latency is left out of the percentiles. Throughput is completed lookups over
    the wall time from the first request to the last response.
    """
    if clients < 1:
        raise ValueError(f"clients must be at least 1; got {clients}")
    next_index = 0
    lock = threading.Lock()
    latencies_ms: list[float] = []
    counts = {"errors": 0, "hits": 0}

    def run_client() -> None:
        nonlocal next_index
        while True:
            with lock:
                if next_index >= len(queries):
                    return
                query = queries[next_index]
                next_index += 1
            started = time.perf_counter()
            try:
                hit = lookup(query)
            except Exception:
                # Any failure of the system under test is counted, not raised, so
                # one bad lookup does not end the measurement.
                with lock:
                    counts["errors"] += 1
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000
            with lock:
                latencies_ms.append(elapsed_ms)
                counts["hits"] += int(hit)

    threads = [threading.Thread(target=run_client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    return SpeedResult(
        clients=clients,
        lookups=len(latencies_ms),
        errors=counts["errors"],
        hits=counts["hits"],
        wall_s=wall_s,
        lookups_per_s=len(latencies_ms) / wall_s if wall_s > 0 else 0.0,
        p50_ms=percentile(latencies_ms, 0.50),
        p99_ms=percentile(latencies_ms, 0.99),
    )


def speed_from_json(document: dict[str, Any]) -> SpeedResult:
    """Rebuild a ``SpeedResult`` from ``to_json`` output.

    Raises:
        KeyError: a field is missing.
    """
    fields = SpeedResult.__dataclass_fields__
    return SpeedResult(**{name: document[name] for name in fields})
