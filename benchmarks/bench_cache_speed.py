"""Speed runs of our cache service for ``make bench-cache``.

The workload is the sampled pairs: their first queries are stored under one
tenant, and their second queries are looked up at the service's threshold by each
number of concurrent clients in ``--clients`` (1 and 32 by default), over one gRPC
channel.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench_cache_data import PairSet
from benchmarks.bench_cache_profile import finish_profile, start_profile
from benchmarks.bench_cache_service import ServiceProcess, SpeedClient
from benchmarks.bench_cache_timing import SpeedResult, measure_clients

PROFILE_S = 20
SPEED_NOTE = (
    "Querygate runs as its own process and is called over gRPC from this process; "
    "GPTCache runs inside its runner process as a library, with no network hop."
)


@dataclass(frozen=True)
class ServiceSpeed:
    """Speed runs of the service, and its profile from the run with most clients."""

    runs: list[SpeedResult]
    profile: list[list[object]]


def speed_workload(
    sets: list[PairSet], args: argparse.Namespace
) -> tuple[list[str], list[str]]:
    """Return (entries, queries): first queries of the pairs, and their partners."""
    entries: list[str] = []
    queries: list[str] = []
    for item in sets:
        for pair in item.pairs:
            if pair.first not in entries and len(entries) < args.speed_entries:
                entries.append(pair.first)
                queries.append(pair.second)
    while len(queries) < args.speed_lookups:
        queries += queries[: args.speed_lookups - len(queries)]
    return entries, queries[: args.speed_lookups]


def time_service(
    service: ServiceProcess,
    workload: tuple[list[str], list[str]],
    args: argparse.Namespace,
    workdir: Path,
) -> ServiceSpeed:
    """Store the workload's entries, then time its lookups for each client count.

    With ``args.py_spy`` set, py-spy then records the service during one more run
    with the most clients, whose numbers are not reported: py-spy pauses the
    process at every sample, so a recorded run is slower.
    """
    entries, queries = workload
    client = SpeedClient(service.target)
    runs: list[SpeedResult] = []
    profile: list[list[object]] = []
    try:
        client.store_all(entries, args.concurrency)
        for query in queries[:20]:
            client.lookup(query)
        for count in args.client_counts:
            runs.append(
                measure_clients(client.lookup, queries, count, server_pid=service.pid)
            )
        if args.py_spy is not None:
            raw_path = workdir / "querygate-profile.txt"
            recorder = start_profile(args.py_spy, service.pid, raw_path, PROFILE_S)
            measure_clients(client.lookup, queries, max(args.client_counts))
            profile = finish_profile(recorder, raw_path)
    finally:
        client.close()
    return ServiceSpeed(runs, profile)


def speed_section(
    ours: ServiceSpeed | None, gptcache: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any] | None:
    """Put both systems' speed runs side by side, with the throughput ratios."""
    if ours is None:
        return None
    section: dict[str, Any] = {
        "entries": min(args.speed_entries, args.speed_entries_stored),
        "queries": args.speed_lookups,
        "note": SPEED_NOTE,
        "querygate": [run.to_json() for run in ours.runs],
        "gptcache": gptcache.get("speed", {}),
        "ratios": {},
        "profiles": {"Querygate service": ours.profile, **gptcache.get("profiles", {})},
    }
    for embedding, runs in section["gptcache"].items():
        for mine, theirs in zip(ours.runs, runs, strict=True):
            if theirs["lookups_per_s"] > 0:
                clients = "1 client" if mine.clients == 1 else f"{mine.clients} clients"
                key = f"{clients}, GPTCache with {embedding} embedding"
                section["ratios"][key] = mine.lookups_per_s / theirs["lookups_per_s"]
    return section
