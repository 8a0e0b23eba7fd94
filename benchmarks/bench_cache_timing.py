"""Lookup latency and throughput with N concurrent clients, for any lookup function.

Used for our cache over gRPC and for GPTCache in its own environment, so this
module imports only the standard library and ``bench_cache_stats``. A client is a
thread that sends one lookup at a time and waits for it, and the clients share one
list of queries.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
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
    # CPU time per lookup of this process (the clients) and of the service process,
    # or None where there is no separate service or /proc cannot be read.
    client_cpu_ms: float | None = None
    server_cpu_ms: float | None = None
    # Failed lookups by exception type, for example {"OperationalError": 3}.
    error_types: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cpu_seconds(pid: int) -> float | None:
    """Return the user plus system CPU time of process ``pid``, all threads included.

    Reads ``/proc/<pid>/stat``, so it works on Linux only. Returns None elsewhere or
    when the process is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            text = handle.read()
    except OSError:
        return None
    # The command name in brackets may contain spaces, so count fields after it.
    fields = text.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure_clients(
    lookup: Callable[[str], bool],
    queries: Sequence[str],
    clients: int,
    server_pid: int | None = None,
) -> SpeedResult:
    """Send every query once from ``clients`` threads and time each lookup.

    ``lookup`` returns whether the query hit. An exception counts as an error, and
    its latency is left out of the percentiles. Throughput is completed lookups over
    the wall time from the first request to the last response. With
    ``server_pid``, the CPU time of that process is reported too.
    """
    if clients < 1:
        raise ValueError(f"clients must be at least 1; got {clients}")
    next_index = 0
    lock = threading.Lock()
    latencies_ms: list[float] = []
    counts = {"errors": 0, "hits": 0}
    error_types: dict[str, int] = {}

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
            except Exception as error:
                # Any failure of the system under test is counted, not raised, so
                # one bad lookup does not end the measurement.
                name = type(error).__name__
                with lock:
                    counts["errors"] += 1
                    error_types[name] = error_types.get(name, 0) + 1
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000
            with lock:
                latencies_ms.append(elapsed_ms)
                counts["hits"] += int(hit)

    threads = [threading.Thread(target=run_client) for _ in range(clients)]
    client_cpu_before = cpu_seconds(os.getpid())
    server_cpu_before = None if server_pid is None else cpu_seconds(server_pid)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    client_cpu_after = cpu_seconds(os.getpid())
    server_cpu_after = None if server_pid is None else cpu_seconds(server_pid)
    return SpeedResult(
        clients=clients,
        lookups=len(latencies_ms),
        errors=counts["errors"],
        hits=counts["hits"],
        wall_s=wall_s,
        lookups_per_s=len(latencies_ms) / wall_s if wall_s > 0 else 0.0,
        p50_ms=percentile(latencies_ms, 0.50),
        p99_ms=percentile(latencies_ms, 0.99),
        client_cpu_ms=_per_lookup_ms(
            client_cpu_before, client_cpu_after, len(latencies_ms)
        ),
        server_cpu_ms=_per_lookup_ms(
            server_cpu_before, server_cpu_after, len(latencies_ms)
        ),
        error_types=error_types,
    )


def _per_lookup_ms(
    before: float | None, after: float | None, lookups: int
) -> float | None:
    if before is None or after is None or lookups == 0:
        return None
    return (after - before) * 1000 / lookups


def speed_from_json(document: dict[str, Any]) -> SpeedResult:
    """Rebuild a ``SpeedResult`` from ``to_json`` output.

    Raises:
        KeyError: a field is missing.
    """
    values: dict[str, Any] = {
        name: document[name]
        for name in SpeedResult.__dataclass_fields__
        if name not in ("client_cpu_ms", "server_cpu_ms", "error_types")
    }
    return SpeedResult(
        **values,
        client_cpu_ms=document.get("client_cpu_ms"),
        server_cpu_ms=document.get("server_cpu_ms"),
        error_types=dict(document.get("error_types", {})),
    )
