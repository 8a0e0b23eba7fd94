"""Write the bench-cache report: JSON with every number, Markdown tables, a PNG plot.

The JSON document is built by ``benchmarks.bench_cache`` and this module only
renders it. Rates appear as percentages with their 95 % Wilson interval.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Systems in the order of the tables: our cache per guard mode, then GPTCache.
SYSTEM_LABELS = {
    "off": "Querygate, guard off",
    "rules": "Querygate, guard rules",
    "on": "Querygate, guard on",
    "gptcache": "GPTCache",
}


def write_report(report: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    markdown_path = out_dir / f"{stem}.md"
    plot_path = out_dir / f"{stem}.png"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    plot_sweeps(report, plot_path)
    markdown_path.write_text(render_markdown(report, plot_path.name), encoding="utf-8")
    return [json_path, markdown_path, plot_path]


def percent(interval: dict[str, Any]) -> str:
    """Format a Wilson interval as ``12.3 % (10.1-14.8)``, or ``-`` when empty."""
    if interval["total"] == 0:
        return "-"
    return (
        f"{interval['rate'] * 100:.1f} % "
        f"({interval['low'] * 100:.1f}-{interval['high'] * 100:.1f})"
    )


def systems(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the sweep results of every system that ran, keyed as SYSTEM_LABELS."""
    found = dict(report["querygate"])
    gptcache = report["gptcache"]
    if gptcache.get("status") == "ran":
        found["gptcache"] = gptcache["sets"]
    return found


def render_markdown(report: dict[str, Any], plot_name: str) -> str:
    """Render the report as Markdown."""
    run = report["run"]
    lines = [
        "# Cache benchmark: hit rate, false hits and lookup speed",
        "",
        f"- command: `{run['command']}`",
        f"- date: {run['date']}; commit {run['commit']}",
        f"- machine: {run['machine']}; load average {run['load_before']} before, "
        f"{run['load_after']} after",
        f"- default threshold {run['default_threshold']}; sweep "
        f"{run['thresholds'][0]} to {run['thresholds'][-1]}; seed {run['seed']}",
        "- rates are percentages with the 95 % Wilson interval in brackets; "
        "precision is the share of served hits that were same-meaning pairs",
        "",
        "## Sets",
        "",
        "| set | pairs | same meaning | different | left out: guard training |"
        " left out: ambiguous grade |",
        "|---|---|---|---|---|---|",
    ]
    for name, info in report["sets"].items():
        lines.append(
            f"| {name} | {info['pairs']} | {info['same_meaning']} | "
            f"{info['different']} | {info['excluded_guard_training']} | "
            f"{info['excluded_ambiguous']} |"
        )
    lines += _default_threshold_table(report)
    lines += _sweep_tables(report)
    lines += _speed_tables(report)
    lines += ["", f"![hit and false-hit rate by threshold]({plot_name})", ""]
    return "\n".join(lines)


def _default_threshold_table(report: dict[str, Any]) -> list[str]:
    threshold = report["run"]["default_threshold"]
    lines = [
        "",
        f"## At the default threshold {threshold}",
        "",
        "| set | system | hit rate | false-hit rate | precision |",
        "|---|---|---|---|---|",
    ]
    for set_name in report["sets"]:
        for system, by_set in systems(report).items():
            rates = _rates_at(by_set[set_name]["sweep"], threshold)
            lines.append(
                f"| {set_name} | {SYSTEM_LABELS[system]} | "
                f"{percent(rates['hit_rate'])} | {percent(rates['false_hit_rate'])} | "
                f"{percent(rates['precision'])} |"
            )
    return lines


def _sweep_tables(report: dict[str, Any]) -> list[str]:
    table_thresholds = report["run"]["table_thresholds"]
    found = systems(report)
    lines = ["", "## Threshold sweep", ""]
    header = "| threshold | " + " | ".join(
        f"{SYSTEM_LABELS[name]}: hits | false hits" for name in found
    )
    for set_name in report["sets"]:
        lines += [
            f"### {set_name}",
            "",
            header + " |",
            "|---" * (1 + 2 * len(found)) + "|",
        ]
        for threshold in table_thresholds:
            cells = []
            for by_set in found.values():
                rates = _rates_at(by_set[set_name]["sweep"], threshold)
                cells += [
                    percent(rates["hit_rate"]),
                    percent(rates["false_hit_rate"]),
                ]
            lines.append(f"| {threshold:.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _speed_tables(report: dict[str, Any]) -> list[str]:
    speed = report.get("speed")
    if not speed:
        return ["", "## Lookup speed", "", "Not measured in this run."]
    lines = [
        "",
        "## Lookup speed",
        "",
        f"{speed['entries']} stored entries, {speed['queries']} lookups per run at "
        f"the default threshold. {speed['note']}",
        "",
        "CPU columns are CPU time per lookup of the client process and of the "
        "service process. The ceiling is the core count over their sum: the "
        "throughput at which the lookups alone would use every core.",
        "",
        "| system | clients | lookups/s | p50 ms | p99 ms | hits | errors "
        "| client CPU ms | service CPU ms | CPU ceiling lookups/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    cores = report["run"]["cpus"]
    for label, runs in _speed_rows(speed):
        for run in runs:
            lines.append(
                f"| {label} | {run['clients']} | {run['lookups_per_s']:.1f} | "
                f"{run['p50_ms']:.2f} | {run['p99_ms']:.2f} | {run['hits']} | "
                f"{_errors_cell(run)} | {_cpu_cells(run, cores)} |"
            )
    for system, profile in speed.get("profiles", {}).items():
        if not profile:
            continue
        lines += [
            "",
            f"Where {system} spends its samples under the most clients (py-spy, "
            "innermost function; waits inside C code count as samples):",
            "",
            "| function | share of samples |",
            "|---|---|",
        ]
        lines += [f"| `{name}` | {share * 100:.1f} % |" for name, share in profile]
    if speed.get("ratios"):
        lines += [
            "",
            "| ratio: Querygate lookups/s over GPTCache's | value |",
            "|---|---|",
        ]
        for name, value in speed["ratios"].items():
            lines.append(f"| {name} | {value:.2f} |")
    return lines


def _errors_cell(run: dict[str, Any]) -> str:
    types = run.get("error_types") or {}
    if not types:
        return str(run["errors"])
    named = ", ".join(f"{name} {count}" for name, count in sorted(types.items()))
    return f"{run['errors']} ({named})"


def _cpu_cells(run: dict[str, Any], cores: int) -> str:
    client = run.get("client_cpu_ms")
    server = run.get("server_cpu_ms")
    total = (client or 0.0) + (server or 0.0)
    ceiling = f"{cores * 1000 / total:.0f}" if total > 0 else "-"
    shown = [f"{value:.2f}" if value is not None else "-" for value in (client, server)]
    return " | ".join([*shown, ceiling])


def _speed_rows(speed: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    rows = [("Querygate over gRPC", speed["querygate"])]
    for embedding, runs in speed.get("gptcache", {}).items():
        rows.append((f"GPTCache in-process, {embedding} embedding", runs))
    return rows


def _rates_at(sweep: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    for rates in sweep:
        if abs(rates["threshold"] - threshold) < 1e-9:
            return rates
    raise KeyError(f"threshold {threshold} is not in the sweep")


def plot_sweeps(report: dict[str, Any], path: Path) -> None:
    """Plot hit rate (solid) and false-hit rate (dashed) against the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    set_names = list(report["sets"])
    columns = min(2, len(set_names))
    rows = (len(set_names) + columns - 1) // columns
    figure, axes = plt.subplots(
        rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False
    )
    colours = {"off": "tab:blue", "rules": "tab:green", "on": "tab:orange"}
    colours["gptcache"] = "tab:red"
    # GPTCache scores the same cosine as our guard-off mode, so its lines lie on
    # top of those: draw guard off wide and pale, GPTCache thin over it.
    widths = {"off": 4.0, "gptcache": 1.2}
    for axis, set_name in zip(axes.flat, set_names, strict=False):
        for system, by_set in systems(report).items():
            sweep = by_set[set_name]["sweep"]
            thresholds = [rates["threshold"] for rates in sweep]
            hits = [rates["hit_rate"]["rate"] for rates in sweep]
            false_hits = [rates["false_hit_rate"]["rate"] for rates in sweep]
            style = {
                "color": colours[system],
                "linewidth": widths.get(system, 2.0),
                "alpha": 0.45 if system == "off" else 1.0,
            }
            label = SYSTEM_LABELS[system]
            axis.plot(thresholds, hits, label=f"{label}: hit rate", **style)
            axis.plot(
                thresholds,
                false_hits,
                linestyle="--",
                label=f"{label}: false-hit rate",
                **style,
            )
        axis.axvline(report["run"]["default_threshold"], color="grey", linewidth=0.8)
        axis.set_title(set_name)
        axis.set_xlabel("cosine threshold")
        axis.set_ylabel("rate")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(set_names) :]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=2, fontsize="small")
    figure.tight_layout(rect=(0, 0.04 + 0.03 * len(labels) / 2 / rows, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
