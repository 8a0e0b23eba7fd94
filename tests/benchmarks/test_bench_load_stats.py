"""Tests of the load benchmark's mix, percentiles, summary, targets and report."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from benchmarks.bench_load_mix import MixShares, PoolExhaustedError, QueryMix
from benchmarks.bench_load_report import render_markdown
from benchmarks.bench_load_stats import (
    RequestRecord,
    latency_summary,
    percentile,
    speed_targets,
    summarize_load,
)
from benchmarks.replay_plan import QuestionPair


def _pairs(count: int, duplicate: bool = True) -> list[QuestionPair]:
    return [
        QuestionPair(i, f"question {i} a?", f"question {i} b?", duplicate)
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("share", "expected"),
    [(0.0, 1.0), (0.1, 1.0), (0.5, 5.0), (0.51, 6.0), (0.95, 10.0), (1.0, 10.0)],
    ids=["min", "p10", "p50", "just-above-half", "p95", "max"],
)
def test_percentile_uses_nearest_rank(share: float, expected: float) -> None:
    values = [float(v) for v in (7, 3, 10, 1, 5, 2, 9, 4, 8, 6)]

    assert percentile(values, share) == expected


def test_percentile_rejects_empty_and_bad_share() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match=r"between 0 and 1; got 1\.5"):
        percentile([1.0], 1.5)


def test_latency_summary_of_no_values_is_empty() -> None:
    summary = latency_summary([])

    assert summary["count"] == 0
    assert summary["p50"] is None
    assert summary["max"] is None


def test_summary_counts_paths_errors_and_throughput() -> None:
    records = [
        RequestRecord("exact", "exact_hit", 2.0),
        RequestRecord("exact", "exact_hit", 4.0),
        RequestRecord("paraphrase", "semantic_hit", 10.0),
        RequestRecord("new", "miss", 20.0),
        RequestRecord("new", "error", 500.0, "DEADLINE_EXCEEDED"),
    ]

    summary = summarize_load(records, duration_s=2.0)

    assert summary["requests"] == 5
    assert summary["answered"] == 4
    assert summary["throughput_rps"] == 2.0
    assert summary["paths"]["exact_hit"] == 2
    assert summary["paths"]["error"] == 1
    assert summary["paths"]["unavailable"] == 0
    assert summary["latency_ms"]["exact_hit"]["p50"] == 2.0
    assert summary["latency_ms"]["exact_hit"]["max"] == 4.0
    assert "unavailable" not in summary["latency_ms"]
    assert summary["errors_by_code"] == {"DEADLINE_EXCEEDED": 1}
    assert summary["paths_by_kind"]["new"] == {"miss": 1, "error": 1}


def test_speed_targets_compare_p50_with_floors() -> None:
    p50 = {
        "router_round_trip": 1.0,
        "cache_round_trip": 1.0,
        "embedding": 8.0,
        "search": 0.5,
        "exact_hit": 2.5,
        "semantic_hit": 13.0,
        "miss": 30.0,
    }

    exact, semantic, miss = speed_targets(p50, model_latency_ms=10.0)

    assert exact.floor_ms == 2.0
    assert exact.ratio == 1.25
    assert exact.met is True
    assert semantic.floor_ms == 10.5
    assert semantic.met is True
    # The miss overhead excludes the simulated model's 10 ms.
    assert miss.measured_ms == 20.0
    assert miss.floor_ms == 11.5
    assert miss.met is False


def test_speed_target_without_samples_is_not_measured() -> None:
    p50 = {"router_round_trip": 1.0, "cache_round_trip": 1.0, "exact_hit": None}

    exact, semantic, _ = speed_targets(p50, model_latency_ms=0.0)

    assert exact.ratio is None
    assert exact.met is None
    assert semantic.floor_ms is None


def test_mix_parse_reads_shares_and_rejects_bad_text() -> None:
    shares = MixShares.parse("exact=0.5, new=0.5")

    assert shares == MixShares(exact=0.5, paraphrase=0.0, new=0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        MixShares.parse("exact=0.5,new=0.6")
    with pytest.raises(ValueError, match="KIND=SHARE"):
        MixShares.parse("repeat=1")
    with pytest.raises(ValueError, match="must be a number"):
        MixShares.parse("new=all")


def test_mix_sends_paraphrases_only_after_their_partner() -> None:
    mix = QueryMix(_pairs(50), MixShares(0.0, 0.5, 0.5), random.Random(3))
    sent: set[str] = set()

    for _ in range(60):
        query = mix.draw()
        if query.kind == "paraphrase":
            partner = query.text.replace(" b?", " a?")
            assert partner in sent
            assert query.text not in sent
        sent.add(query.text)


def test_mix_draws_kinds_in_their_shares() -> None:
    mix = QueryMix(_pairs(4000), MixShares(0.3, 0.2, 0.5), random.Random(5))
    for _ in range(50):
        mix.draw()

    kinds = Counter(mix.draw().kind for _ in range(2000))

    assert 500 <= kinds["exact"] <= 700
    assert 300 <= kinds["paraphrase"] <= 500
    assert 900 <= kinds["new"] <= 1100


def test_mix_falls_back_to_repeats_when_pool_runs_out() -> None:
    mix = QueryMix(_pairs(2, duplicate=False), MixShares(0, 0, 1), random.Random(0))
    first = [mix.draw() for _ in range(4)]

    fallback = mix.draw()

    assert {query.kind for query in first} == {"new"}
    assert fallback.drawn == "new"
    assert fallback.kind == "exact"
    assert fallback.text in {query.text for query in first}


def test_mix_with_empty_pool_raises() -> None:
    mix = QueryMix([], MixShares(), random.Random(0))

    with pytest.raises(PoolExhaustedError):
        mix.draw()
    with pytest.raises(PoolExhaustedError):
        mix.new_query()


def test_markdown_report_shows_targets_paths_and_memory() -> None:
    records = [
        RequestRecord("new", "miss", 20.0),
        RequestRecord("exact", "error", 1, "X"),
    ]
    targets = speed_targets(
        {"router_round_trip": 1.0, "cache_round_trip": 1.0, "exact_hit": 3.0}, 0.0
    )
    report = {
        "setup": {
            "command": "python -m benchmarks.bench_load",
            "started_at": "2026-12-04T19:00:00+00:00",
            "machine": "test",
            "model_latency_ms": 0.0,
            "embedding_backend": "onnx",
            "mix": "exact=0.3,paraphrase=0.2,new=0.5",
            "seed": 7,
        },
        "speed": {
            "iterations": 1,
            "load_before": "1.00/1.00/1.00",
            "load_after": "1.00/1.00/1.00",
            "parts_ms": {"exact_hit": latency_summary([3.0])},
            "targets": [target.as_dict() for target in targets],
            "unexpected": {"semantic_hit step served as miss": 1},
        },
        "load_runs": [
            {
                "clients": 4,
                "duration_s": 1.0,
                "load_before": "1.00/1.00/1.00",
                "load_after": "1.00/1.00/1.00",
                "preload_paths": {"miss": 3},
                "summary": summarize_load(records, 1.0),
                "cpu_s": {"cache": 1.5, "router": None, "benchmark clients": 0.25},
                "peak_rss_kib": {"cache": 2048, "router": None},
            }
        ],
    }

    markdown = render_markdown(report)

    assert markdown.startswith("# Load benchmark")
    assert "| exact hit | 3.00 | 2.00 | 1.50 | 1.3 | no |" in markdown
    assert "semantic_hit step served as miss: 1" in markdown
    assert "## Load: 4 clients for 1 s" in markdown
    assert "Errors by status code: X 1." in markdown
    assert "| cache | 1.5 | 2 MiB |" in markdown
    assert "| router | - | - |" in markdown
    assert "| benchmark clients | 0.2 | - |" in markdown
