"""Tests of the replay's query plan and report, on small hand-written data."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from benchmarks.replay_plan import PlannedQuery, QuestionPair, build_plan, load_pairs
from benchmarks.replay_report import QueryResult, render_markdown, summarize

HEADER = "pair_id,question1,question2,is_duplicate\n"


def _write_pairs(data_dir: Path, rows: list[str], header: str = HEADER) -> None:
    folder = data_dir / "quora_qqp"
    folder.mkdir(parents=True)
    (folder / "qqp_pairs.csv").write_text(header + "".join(rows), encoding="utf-8")


def _pairs(count: int) -> list[QuestionPair]:
    return [
        QuestionPair(i, f"question {i} a?", f"question {i} b?", i % 2 == 0)
        for i in range(count)
    ]


def test_load_pairs_parses_quoted_csv(tmp_path: Path) -> None:
    _write_pairs(
        tmp_path,
        [
            '0,"What is 1,000 + 1?","How much is ""1,000 plus 1""?",1\n',
            "1,Where is Paris?,Where is Rome?,0\n",
        ],
    )

    pairs = load_pairs(tmp_path, 2, random.Random(0))

    by_id = {pair.pair_id: pair for pair in pairs}
    assert by_id[0].question1 == "What is 1,000 + 1?"
    assert by_id[0].question2 == 'How much is "1,000 plus 1"?'
    assert by_id[0].is_duplicate is True
    assert by_id[1].is_duplicate is False


def test_load_pairs_skips_empty_questions(tmp_path: Path) -> None:
    _write_pairs(tmp_path, ["0,Where is Paris?,,0\n", "1,Where is Rome?,Rome?,1\n"])

    with pytest.raises(ValueError, match=r"--pairs is 2, but .* has only 1 usable"):
        load_pairs(tmp_path, 2, random.Random(0))


def test_load_pairs_names_missing_column(tmp_path: Path) -> None:
    _write_pairs(tmp_path, ["0,a,b\n"], header="pair_id,question1,question2\n")

    with pytest.raises(ValueError, match="is missing the column"):
        load_pairs(tmp_path, 1, random.Random(0))


def test_load_pairs_names_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_pairs(tmp_path, 1, random.Random(0))


def test_plan_sends_both_questions_and_repeats() -> None:
    pairs = _pairs(50)

    plan = build_plan(pairs, 0.1, random.Random(3))

    originals = [query for query in plan if not query.repeat]
    repeats = [query for query in plan if query.repeat]
    expected = {text for pair in pairs for text in (pair.question1, pair.question2)}
    assert sorted(q.text for q in originals) == sorted(expected)
    assert len(repeats) == 10
    for repeat in repeats:
        first = next(i for i, q in enumerate(plan) if q.text == repeat.text)
        assert plan.index(repeat) > first


def test_plan_is_shuffled_and_seeded() -> None:
    pairs = _pairs(50)

    first = build_plan(pairs, 0.1, random.Random(3))
    second = build_plan(pairs, 0.1, random.Random(3))
    other_seed = build_plan(pairs, 0.1, random.Random(4))

    assert first == second
    assert first != other_seed
    in_file_order = [text for p in pairs for text in (p.question1, p.question2)]
    assert [q.text for q in first if not q.repeat] != in_file_order


def _result(
    text: str, pair_id: int, duplicate: bool, status: str, **fields: object
) -> QueryResult:
    query = PlannedQuery(text, pair_id, duplicate, repeat=False)
    return QueryResult(query=query, cache_status=status, **fields)  # type: ignore[arg-type]


def test_summary_labels_semantic_hits_by_pair() -> None:
    results = [
        _result("a1", 1, True, "miss", latency_ms=100, cache_entry_id="e1"),
        _result("a2", 1, True, "semantic_hit", latency_ms=10, cache_entry_id="e1"),
        _result("b1", 2, False, "miss", latency_ms=100, cache_entry_id="e2"),
        _result("b2", 2, False, "semantic_hit", latency_ms=10, cache_entry_id="e2"),
        _result("c1", 3, True, "semantic_hit", latency_ms=10, cache_entry_id="e2"),
        _result("d1", 4, True, "semantic_hit", latency_ms=10, cache_entry_id="zz"),
    ]

    labels = summarize(results, run={})["semantic_hits_by_match"]

    assert labels == {
        "pair_partner_labelled_duplicate": 1,
        "pair_partner_labelled_not_duplicate": 1,
        "question_of_another_pair": 1,
        "entry_not_seen_in_replay": 1,
    }


def test_summary_counts_cost_tiers_and_latency() -> None:
    results = [
        _result(
            "a",
            1,
            True,
            "miss",
            latency_ms=200,
            tier="simple",
            cost_usd=0.1,
            baseline_cost_usd=1.0,
        ),
        _result(
            "b",
            1,
            True,
            "miss",
            latency_ms=400,
            tier="complex",
            cost_usd=1.0,
            baseline_cost_usd=1.0,
        ),
        _result("a", 1, True, "exact_hit", latency_ms=2, baseline_cost_usd=1.0),
        _result("c", 2, False, "error", latency_ms=5, error_code="UNAVAILABLE"),
    ]

    report = summarize(results, run={})

    assert report["cache_status"]["miss"] == 2
    assert report["hit_rate"]["exact"] == pytest.approx(1 / 3)
    assert report["tier_mix_of_model_calls"] == {"simple": 1, "medium": 0, "complex": 1}
    assert report["cost_usd"]["total"] == pytest.approx(1.1)
    assert report["cost_usd"]["baseline_complex_tier_no_cache"] == pytest.approx(3.0)
    assert report["cost_usd"]["saved_fraction"] == pytest.approx(1.9 / 3.0)
    assert report["latency_ms"]["miss"]["p50"] == pytest.approx(300.0)
    assert report["latency_ms"]["all"]["count"] == 4
    assert "semantic_hit" not in report["latency_ms"]
    assert report["errors"] == {"UNAVAILABLE": 1}


def test_markdown_shows_every_section() -> None:
    results = [_result("a", 1, True, "miss", latency_ms=200, tier="simple")]
    run = {
        "backend": "simulator",
        "started_at": "2026-01-01T00:00:00+00:00",
        "machine": "x86_64 Linux",
        "pairs": 1,
        "repeats": 0,
        "seed": 7,
        "max_tokens": 64,
        "system_prompt": "Be brief.",
        "concurrency": 1,
        "duration_s": 1.0,
    }

    markdown = render_markdown(summarize(results, run))

    for heading in (
        "cache status",
        "tier (model calls)",
        "cost at list prices",
        "latency (ms, client side)",
    ):
        assert f"| {heading} |" in markdown


def test_summary_counts_shared_answers() -> None:
    results = [
        _result("a", 1, True, "miss", latency_ms=300, tier="medium", cost_usd=0.2),
        _result("a", 1, True, "shared", latency_ms=290),
        _result("a", 1, True, "shared", latency_ms=295),
    ]

    report = summarize(results, run={})

    assert report["cache_status"]["shared"] == 2
    assert sum(report["cache_status"].values()) == len(results)
    assert report["tier_mix_of_model_calls"]["medium"] == 1
    assert report["queries"] == 3
