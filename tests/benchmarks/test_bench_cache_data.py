"""Tests of the bench-cache pair loading: user files, stsb grades, guard exclusion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_cache_data import (
    PairsFileError,
    guard_training_pairs,
    load_built_in,
    load_stsb,
    read_pairs_file,
    sample_pairs,
)
from cache_service.pair_eval import LabelledPair

FIXTURE = Path(__file__).parent / "fixtures" / "bench_cache_pairs.csv"


def test_fixture_csv_is_read_with_labels() -> None:
    pairs = read_pairs_file(FIXTURE)
    assert len(pairs) == 6
    assert pairs[0] == LabelledPair(
        "How do I reset my password?", "How can I reset my password?", True
    )
    assert pairs[4].first == "How do I bake bread, step by step?"
    assert [pair.same_meaning for pair in pairs] == [
        True,
        False,
        False,
        True,
        False,
        False,
    ]


def test_jsonl_with_quora_columns_is_read(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    rows = [
        {
            "question1": "Who wrote Hamlet?",
            "question2": "Hamlet author?",
            "is_duplicate": 1,
        },
        {
            "question1": "Open the door",
            "question2": "Close the door",
            "is_duplicate": 0,
        },
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
    pairs = read_pairs_file(path)
    assert [pair.same_meaning for pair in pairs] == [True, False]
    assert pairs[1].second == "Close the door"


def test_missing_label_column_names_the_options(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("a,b,score\nx,y,1\n")
    with pytest.raises(PairsFileError, match="no column same_answer or is_duplicate"):
        read_pairs_file(path)


def test_invalid_label_names_row_and_values(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("a,b,same_answer\nx,y,true\nx,z,maybe\n")
    with pytest.raises(PairsFileError, match="row 2: label 'maybe' is invalid"):
        read_pairs_file(path)


def test_empty_and_missing_files_are_rejected(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b,same_answer\n")
    with pytest.raises(PairsFileError, match="contains no pairs"):
        read_pairs_file(empty)
    with pytest.raises(PairsFileError, match="cannot read pairs file"):
        read_pairs_file(tmp_path / "absent.csv")


def test_jsonl_non_object_line_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('["a", "b", true]\n')
    with pytest.raises(PairsFileError, match="one JSON object per line"):
        read_pairs_file(path)


def test_stsb_grades_map_to_labels(tmp_path: Path) -> None:
    folder = tmp_path / "stsb"
    folder.mkdir()
    header = "genre,source,year,sid,score,sentence1,sentence2\n"
    rows = [
        "g,s,y,1,5.0,A dog runs.,A dog is running.",
        "g,s,y,2,4.0,A man cooks.,A man is cooking food.",
        "g,s,y,3,3.8,A cat sleeps.,A cat naps on a bed.",
        "g,s,y,4,3.0,Two men talk.,Two women talk.",
        "g,s,y,5,2.9,A boy reads.,A girl writes.",
        "g,s,y,6,0.0,Stocks fell.,A bird sings.",
    ]
    (folder / "stsb_dev.csv").write_text(header + "\n".join(rows) + "\n")
    (folder / "stsb_test.csv").write_text(header)
    pairs, ambiguous = load_stsb(tmp_path)
    assert [pair.same_meaning for pair in pairs] == [True, True, False, False]
    assert ambiguous == 2


def test_sample_is_seeded_and_bounded() -> None:
    pairs = [LabelledPair(f"q{index}", f"p{index}", True) for index in range(50)]
    first = sample_pairs(pairs, 10, seed=3)
    assert first == sample_pairs(pairs, 10, seed=3)
    assert len(first) == 10
    assert first != sample_pairs(pairs, 10, seed=4)
    assert len(sample_pairs(pairs, 100, seed=3)) == 50


def test_guard_training_pairs_are_left_out(data_dir: Path) -> None:
    exclude = guard_training_pairs(data_dir)
    fow = load_built_in("fow_cache_pairs", data_dir, 1000, 0, exclude)
    # The verifier trains on half of the 300 fow pairs.
    assert fow.excluded_guard_training == 150
    assert fow.available == 150
    assert all((pair.first, pair.second) not in exclude for pair in fow.pairs)
    quora = load_built_in("quora_qqp", data_dir, 50, 0, exclude)
    assert quora.excluded_guard_training == 6000
    assert len(quora.pairs) == 50
