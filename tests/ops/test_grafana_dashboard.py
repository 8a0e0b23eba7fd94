"""The Grafana dashboard: valid panels whose queries read real metrics."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from metric_catalog import exported_families, exported_series, promtool, selectors

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "ops" / "grafana" / "querygate.json"


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def query_panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def expressions() -> list[str]:
    return [target["expr"] for panel in query_panels() for target in panel["targets"]]


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = dashboard()["panels"]
    ids = [panel["id"] for panel in panels]

    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


@pytest.mark.parametrize("panel", query_panels(), ids=lambda panel: panel["title"])
def test_panel_queries_the_datasource_variable(panel: dict[str, Any]) -> None:
    assert panel["datasource"]["uid"] == "${datasource}"
    assert panel["targets"]
    for target in panel["targets"]:
        assert target["expr"].strip()


@pytest.mark.parametrize("expr", expressions())
def test_query_reads_only_exported_metrics(expr: str) -> None:
    series = exported_series()
    found = selectors(expr)

    assert found, "the query reads no metric"
    for selector in found:
        assert selector.name in series, f"{selector.name} is not exported"
        unknown = selector.labels - series[selector.name]
        assert not unknown, f"{selector.name} has no labels {sorted(unknown)}"


def test_every_metric_family_is_on_the_dashboard() -> None:
    shown = {selector.name for expr in expressions() for selector in selectors(expr)}
    shown_families = {
        name.removesuffix(suffix)
        for name in shown
        for suffix in ("_total", "_bucket", "_info", "")
        if name.endswith(suffix)
    }

    assert exported_families() <= shown_families


def test_queries_parse_as_promql(tmp_path: Path) -> None:
    # promtool has no command that parses a bare expression, but it parses the
    # expression of every recording rule it checks.
    document = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{index}", "expr": expr}
                    for index, expr in enumerate(expressions())
                ],
            }
        ]
    }
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text(yaml.safe_dump(document), encoding="utf-8")

    result = subprocess.run(
        [promtool(), "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
