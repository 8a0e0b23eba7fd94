"""Tests of the labelled-pair evaluation of the semantic layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cache_service.pair_eval import (
    LabelledPair,
    load_fow,
    load_paws,
    load_quora,
    measure,
    sample,
)
from cache_service.testing import FakeEmbedder


def test_measure_counts_hits_and_false_hits() -> None:
    embedder = FakeEmbedder()
    embedder.set_similar("paraphrase hit", "anchor one", 0.9)
    embedder.set_similar("paraphrase miss", "anchor two", 0.5)
    embedder.set_similar("false hit", "anchor three", 0.95)
    pairs = [
        LabelledPair("anchor one", "paraphrase hit", True),
        LabelledPair("anchor two", "paraphrase miss", True),
        LabelledPair("anchor three", "false hit", False),
        LabelledPair("anchor four", "unrelated", False),
    ]

    rates = measure("tiny", pairs, embedder, threshold=0.85)

    assert rates.paraphrases == 2
    assert rates.different == 2
    assert rates.hit_rate == pytest.approx(0.5)
    assert rates.false_hit_rate == pytest.approx(0.5)


def test_sample_is_seeded_and_bounded() -> None:
    pairs = [LabelledPair(str(n), str(n), True) for n in range(100)]
    assert sample(pairs, 10, seed=3) == sample(pairs, 10, seed=3)
    assert len(sample(pairs, 10, seed=3)) == 10
    assert sample(pairs[:5], 10, seed=3) == pairs[:5]


def test_loaders_read_fixture_files(tmp_path: Path) -> None:
    (tmp_path / "quora_qqp").mkdir()
    (tmp_path / "quora_qqp" / "qqp_pairs.csv").write_text(
        'pair_id,question1,question2,is_duplicate\n0,"A, b?",B,1\n1,C,D,0\n'
    )
    (tmp_path / "paws_wiki").mkdir()
    (tmp_path / "paws_wiki" / "paws_dev.csv").write_text(
        "id,sentence1,sentence2,label\n1,E,F,0\n"
    )
    (tmp_path / "fow_cache_pairs").mkdir()
    (tmp_path / "fow_cache_pairs" / "pairs.jsonl").write_text(
        json.dumps({"a": "G", "b": "H", "same_answer": False}) + "\n\n"
    )

    assert load_quora(tmp_path) == [
        LabelledPair("A, b?", "B", True),
        LabelledPair("C", "D", False),
    ]
    assert load_paws(tmp_path) == [LabelledPair("E", "F", False)]
    assert load_fow(tmp_path) == [LabelledPair("G", "H", False)]


def test_loaders_read_shared_data(data_dir: Path) -> None:
    quora = load_quora(data_dir)
    paws = load_paws(data_dir)
    fow = load_fow(data_dir)

    # Row and label counts of the data files, so a loader that drops rows fails.
    assert len(quora) == 80_854
    assert sum(pair.same_meaning for pair in quora) == 30_141
    assert len(paws) == 8_000
    assert sum(not pair.same_meaning for pair in paws) == 4_461
    assert len(fow) == 300
    assert sum(not pair.same_meaning for pair in fow) == 150
