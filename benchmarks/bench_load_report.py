"""Render the load benchmark's report as Markdown and write it with its JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.bench_load_stats import PATHS


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _speed_section(speed: dict[str, Any]) -> list[str]:
    lines = [
        "## Speed targets",
        "",
        f"One request at a time, {speed['iterations']} iterations, "
        f"load average {speed['load_before']} before and {speed['load_after']} "
        "after. Times are p50 in ms.",
        "",
        "| Part | Samples | p50 | p95 | p99 |",
        "|---|---|---|---|---|",
    ]
    for name, summary in speed["parts_ms"].items():
        lines.append(
            f"| {name} | {summary['count']} | {_ms(summary['p50'])} | "
            f"{_ms(summary['p95'])} | {_ms(summary['p99'])} |"
        )
    lines += [
        "",
        "| Target | Measured p50 | Floor | Ratio | Limit | Met | Floor is |",
        "|---|---|---|---|---|---|---|",
    ]
    for target in speed["targets"]:
        ratio = "-" if target["ratio"] is None else f"{target['ratio']:.2f}"
        met = {True: "yes", False: "no", None: "not measured"}[target["met"]]
        lines.append(
            f"| {target['name']} | {_ms(target['measured_p50_ms'])} | "
            f"{_ms(target['floor_ms'])} | {ratio} | {target['limit']} | {met} | "
            f"{target['floor_parts']} |"
        )
    if speed["unexpected"]:
        lines += ["", "Route calls that took another path than their step expected:"]
        lines += [f"- {key}: {count}" for key, count in speed["unexpected"].items()]
    return [*lines, ""]


def _load_section(run: dict[str, Any]) -> list[str]:
    summary = run["summary"]
    throughput = summary["throughput_rps"]
    lines = [
        f"## Load: {run['clients']} clients for {run['duration_s']:g} s",
        "",
        f"{summary['requests']} requests, {summary['answered']} answered in "
        f"{summary['duration_s']:.1f} s: "
        f"{'-' if throughput is None else f'{throughput:.1f}'} requests/s. "
        f"Load average {run['load_before']} before and {run['load_after']} after. "
        f"Preload: {run['preload_paths']}.",
        "",
        "| Path | Requests | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    latency = summary["latency_ms"]
    for path in ("all", *PATHS):
        if path not in latency:
            continue
        row = latency[path]
        lines.append(
            f"| {path} | {row['count']} | {_ms(row['p50'])} | {_ms(row['p95'])} | "
            f"{_ms(row['p99'])} | {_ms(row['max'])} |"
        )
    errors = summary["errors_by_code"]
    shown = ", ".join(f"{code} {count}" for code, count in errors.items()) or "none"
    lines += ["", f"Errors by status code: {shown}.", ""]
    lines += ["| Kind sent | Paths served |", "|---|---|"]
    for kind, paths in summary["paths_by_kind"].items():
        served = ", ".join(f"{path} {count}" for path, count in sorted(paths.items()))
        lines.append(f"| {kind} | {served} |")
    lines += [
        "",
        "| Process | CPU s in the load run | Peak RSS (VmHWM) |",
        "|---|---|---|",
    ]
    for process, seconds in run["cpu_s"].items():
        kib = run["peak_rss_kib"].get(process)
        shown_cpu = "-" if seconds is None else f"{seconds:.1f}"
        shown_rss = "-" if kib is None else f"{kib / 1024:.0f} MiB"
        lines.append(f"| {process} | {shown_cpu} | {shown_rss} |")
    return [*lines, ""]


def render_markdown(report: dict[str, Any]) -> str:
    """Return the report as a Markdown page."""
    setup = report["setup"]
    lines = [
        "# Load benchmark",
        "",
        f"Command: `{setup['command']}`",
        "",
        f"Started {setup['started_at']} on {setup['machine']}. Router models: "
        f"simulator with {setup['model_latency_ms']:g} ms latency. Cache embedding "
        f"backend: {setup['embedding_backend']}. Mix: {setup['mix']} of Quora "
        f"questions, seed {setup['seed']}.",
        "",
    ]
    if report.get("speed") is not None:
        lines += _speed_section(report["speed"])
    for run in report["load_runs"]:
        lines += _load_section(run)
    return "\n".join(lines)


def write_report(report: dict[str, Any], folder: Path, stem: str) -> list[Path]:
    """Write ``report`` as stem.json and stem.md in ``folder``; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{stem}.json"
    markdown_path = folder / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown_path.write_text(render_markdown(report), encoding="utf-8")
    return [json_path, markdown_path]
