"""The Prometheus alert rules: valid, tested with promtool, and on real metric names."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from metric_catalog import exported_series, promtool, recorded_names, selectors

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "ops" / "prometheus" / "querygate-alerts.yml"
RULE_TESTS = [
    REPO / "ops" / "prometheus" / "querygate-alerts.test.yml",
    REPO / "ops" / "prometheus" / "querygate-alerts-daily.test.yml",
]
EXAMPLE_CONFIG = REPO / "ops" / "prometheus" / "prometheus.example.yml"
RUNBOOKS = REPO / "docs" / "runbooks.md"
# The alerts that operators asked for, besides any others in the file.
REQUIRED_ALERTS = {
    "QuerygateRouterLatencyHigh",
    "QuerygateRouterErrorRateHigh",
    "QuerygateCostSpike",
    "QuerygateBreakerOpen",
    "QuerygateCacheDown",
    "QuerygateCacheUnreachableFromRouter",
}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def github_anchor(heading: str) -> str:
    """Return the anchor that GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    headings = re.findall(r"^#+ (.+)$", RUNBOOKS.read_text(encoding="utf-8"), re.M)
    return {github_anchor(heading) for heading in headings}


def test_required_alerts_present() -> None:
    names = {rule["alert"] for rule in alerts()}

    assert names >= REQUIRED_ALERTS


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_alert_has_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"page", "ticket"}
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["description"]
    assert "for" in rule


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_alert_links_existing_runbook_section(rule: dict[str, Any]) -> None:
    path, _, anchor = rule["annotations"]["runbook_url"].partition("#")

    assert path == "docs/runbooks.md"
    assert anchor in runbook_anchors()


@pytest.mark.parametrize(
    "rule", rules(), ids=lambda rule: rule.get("alert") or rule["record"]
)
def test_rule_reads_only_exported_metrics(rule: dict[str, Any]) -> None:
    series = exported_series()
    recorded = {r["record"] for r in rules() if "record" in r}

    for selector in selectors(rule["expr"]):
        assert selector.name in series, f"{selector.name} is not exported"
        unknown = selector.labels - series[selector.name]
        assert not unknown, f"{selector.name} has no labels {sorted(unknown)}"
    assert recorded_names(rule["expr"]) <= recorded


def test_promtool_checks_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_tests_fire_each_alert() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_promtool_test() -> None:
    tested = set()
    for path in RULE_TESTS:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["exp_alerts"]:
                    tested.add(check["alertname"])

    assert tested == {rule["alert"] for rule in alerts()}


def test_example_config_is_valid() -> None:
    result = subprocess.run(
        [promtool(), "check", "config", str(EXAMPLE_CONFIG)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
