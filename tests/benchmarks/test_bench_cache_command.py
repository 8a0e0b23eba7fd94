"""Test that bench-cache runs on tiny samples against the real service and reports.

The GPTCache part needs .venv-bench, which the test suite does not build, so these
runs pass ``--gptcache off``; ``test_gptcache_mapping.py`` covers our side of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from benchmarks.bench_cache_service import replay_pairs
from benchmarks.bench_cache_stats import served_at
from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.pair_eval import LabelledPair
from cache_service.testing import settings_for_tests, start_cache_server

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "bench_cache_pairs.csv"


def run_bench(tmp_path: Path, *options: str) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_cache",
        "--gptcache",
        "off",
        "--out-dir",
        str(tmp_path),
        "--name",
        "report",
        *options,
    ]
    finished = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"report.{suffix}").stat().st_size > 0
    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    return report


def test_bench_cache_on_fixture_file_writes_report(tmp_path: Path) -> None:
    report = run_bench(
        tmp_path,
        "--pairs-file",
        str(FIXTURE),
        "--speed-entries",
        "3",
        "--speed-lookups",
        "8",
        "--clients",
        "1,4",
    )

    assert list(report["sets"]) == ["bench_cache_pairs"]
    assert report["sets"]["bench_cache_pairs"]["same_meaning"] == 2
    assert report["sets"]["bench_cache_pairs"]["different"] == 4
    assert set(report["querygate"]) == {"off", "on"}
    assert report["gptcache"]["status"] == "skipped: --gptcache off"

    sweep_off = report["querygate"]["off"]["bench_cache_pairs"]["sweep"]
    assert [rates["threshold"] for rates in sweep_off][:3] == [0.7, 0.71, 0.72]
    assert sweep_off[-1]["threshold"] == 0.95
    at_default = next(rates for rates in sweep_off if rates["threshold"] == 0.85)
    # "Cancel my subscription" / "Don't cancel my subscription" have a cosine of
    # 0.97, so plain cosine serves at least that false hit.
    assert at_default["false_hit_rate"]["count"] >= 1
    sweep_on = report["querygate"]["on"]["bench_cache_pairs"]["sweep"]
    guarded = next(rates for rates in sweep_on if rates["threshold"] == 0.85)
    assert guarded["false_hit_rate"]["count"] == 0

    runs = report["speed"]["querygate"]
    assert [run["clients"] for run in runs] == [1, 4]
    assert all(run["lookups"] == 8 and run["errors"] == 0 for run in runs)
    markdown = (tmp_path / "report.md").read_text()
    assert "## At the default threshold 0.85" in markdown
    assert "| bench_cache_pairs | Querygate, guard on |" in markdown


def test_bench_cache_on_real_sets_writes_report(data_dir: Path, tmp_path: Path) -> None:
    report = run_bench(
        tmp_path,
        "--data-dir",
        str(data_dir),
        "--pairs",
        "3",
        "--guard-modes",
        "on",
        "--speed-lookups",
        "0",
    )

    assert list(report["sets"]) == ["quora_qqp", "paws_wiki", "fow_cache_pairs", "stsb"]
    for name, info in report["sets"].items():
        assert info["pairs"] == 3
        sweep = report["querygate"]["on"][name]["sweep"]
        assert sweep[0]["hit_rate"]["total"] == info["same_meaning"]
        assert sweep[0]["false_hit_rate"]["total"] == info["different"]
    assert report["sets"]["stsb"]["excluded_ambiguous"] > 0
    assert report["speed"] is None


# Pairs whose cosines fall on both sides of the sweep's thresholds, with some the
# guard rejects (numbers, negation) and some it accepts.
SWEEP_PAIRS = [
    LabelledPair("How do I reset my password?", "How can I reset my password?", True),
    LabelledPair("Cancel my subscription", "Don't cancel my subscription", False),
    LabelledPair("Convert 5 km to miles", "Convert 50 km to miles", False),
    LabelledPair(
        "What is the capital of France?", "Which city is France's capital?", True
    ),
    LabelledPair(
        "How do I learn Python fast?", "What is the best way to learn Python?", True
    ),
    LabelledPair(
        "How do I bake sourdough bread?", "How do I bake banana bread?", False
    ),
    LabelledPair(
        "Best laptop for students", "Which laptop should a student buy?", True
    ),
    LabelledPair("What causes rain?", "Why does it rain?", True),
]


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder.load()


@pytest.mark.parametrize("guard", ["on", "off"])
def test_sweep_matches_lookups_at_each_threshold(
    guard: str, embedder: SentenceTransformerEmbedder
) -> None:
    thresholds = [0.70, 0.75, 0.80, 0.85, 0.90, 0.95]
    settings = settings_for_tests(false_hit_guard=guard)
    with start_cache_server(embedder, settings) as running:
        items = [("sweep", number, pair) for number, pair in enumerate(SWEEP_PAIRS)]
        replayed = replay_pairs(running.target, items, 0.70, 2, lambda: None)
        with grpc.insecure_channel(running.target) as channel:
            stub = cache_pb2_grpc.CacheServiceStub(channel)
            for threshold in thresholds:
                for number, pair in enumerate(SWEEP_PAIRS):
                    # A tenant per threshold and pair, so each lookup finds one entry.
                    scope = cache_pb2.Scope(tenant=f"direct-{threshold}-{number}")
                    stub.Store(
                        cache_pb2.StoreRequest(
                            query=pair.first,
                            scope=scope,
                            answer="answer",
                            finish_reason="stop",
                        )
                    )
                    direct = stub.Lookup(
                        cache_pb2.LookupRequest(
                            query=pair.second, scope=scope, min_similarity=threshold
                        )
                    )
                    derived = served_at(replayed[number].outcome, threshold)
                    assert derived == direct.hit, (guard, threshold, pair)
    # The guard must have changed at least one decision, or this test shows little:
    # a miss whose candidate was above the replay's threshold was rejected.
    if guard == "on":
        assert any(
            not item.outcome.hit and item.outcome.similarity >= 0.70
            for item in replayed
        )
