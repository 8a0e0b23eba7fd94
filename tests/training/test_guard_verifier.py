"""Tests of the guard verifier's training entry point on small hand-written pairs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cache_service.guard import MANIFEST_FILE, Verifier
from training import guard_pairs, guard_verifier
from training.guard_verifier import split_indices

PARAPHRASES = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("How do I convert 5 km to miles?", "Convert 5 km into miles"),
    ("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
    ("Where can I buy cheap shoes?", "Where do I buy cheap shoes?"),
    ("How do I cook rice?", "What is the way to cook rice?"),
]
DIFFERENT = [
    ("Convert 5 km to miles", "Convert 50 km to miles"),
    ("Cancel my subscription", "Don't cancel my subscription"),
    ("Flights from Paris to London", "Flights from London to Paris"),
    ("How do I turn on dark mode?", "How do I turn off dark mode?"),
    ("Does Alice owe Bob money?", "Does Bob owe Alice money?"),
    ("Book a table for 2 people", "Book a table for 4 people"),
]


def write_data(root: Path) -> None:
    (root / "quora_qqp").mkdir(parents=True)
    (root / "paws_wiki").mkdir()
    (root / "fow_cache_pairs").mkdir()
    rows = [(a, b, "1") for a, b in PARAPHRASES] + [(a, b, "0") for a, b in DIFFERENT]
    with (root / "quora_qqp" / "qqp_pairs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question1", "question2", "is_duplicate"])
        writer.writerows(rows)
    with (root / "paws_wiki" / "paws_dev.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence1", "sentence2", "label"])
        writer.writerows(rows)
    with (root / "fow_cache_pairs" / "pairs.jsonl").open("w") as handle:
        for a, b, label in rows:
            handle.write(
                json.dumps({"a": a, "b": b, "same_answer": label == "1"}) + "\n"
            )


def test_split_is_seeded_and_disjoint() -> None:
    train, test = split_indices(101, seed=3)
    assert split_indices(101, seed=3) == (train, test)
    assert split_indices(101, seed=4) != (train, test)
    assert not set(train) & set(test)
    assert sorted(train + test) == list(range(101))


def test_training_writes_loadable_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    write_data(data_dir)
    out = tmp_path / "guard"
    cache_dir = tmp_path / "embeddings"

    code = guard_verifier.main(
        ["--data-dir", str(data_dir), "--out", str(out), "--cache-dir", str(cache_dir)]
    )

    assert code == 0
    verifier = Verifier.load(out)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(manifest["held_out_metrics"]) == 3
    assert "seed 0" in manifest["split"]
    assert list(cache_dir.glob("quora_qqp-*.npz"))
    printed = capsys.readouterr().out
    assert "paws_wiki" in printed
    assert "us per candidate" in printed
    assert "thread CPU p50" in printed
    assert 0.0 <= verifier.threshold <= 1.0


def test_evaluate_only_writes_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_data(data_dir)
    out = tmp_path / "guard"
    args = ["--data-dir", str(data_dir), "--out", str(out)]
    args += ["--cache-dir", str(tmp_path / "embeddings")]
    assert guard_verifier.main(args) == 0
    written = (out / MANIFEST_FILE).read_text()

    assert guard_verifier.main([*args, "--evaluate-only"]) == 0
    assert (out / MANIFEST_FILE).read_text() == written


def test_unused_pairs_leave_out_every_training_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_data(tmp_path)
    monkeypatch.setitem(guard_pairs.SAMPLE_SIZES, "quora_qqp", 8)
    monkeypatch.setitem(guard_pairs.UNUSED_SIZES, "quora_qqp", 3)

    unused = guard_pairs.load_unused_pairs(tmp_path)
    trained = guard_pairs.load_pairs(tmp_path)["quora_qqp"]

    assert len(unused["quora_qqp"]) == 3
    trained_texts = {(pair.first, pair.second) for pair in trained}
    assert not {(pair.first, pair.second) for pair in unused["quora_qqp"]} & (
        trained_texts
    )
    assert guard_pairs.load_unused_pairs(tmp_path) == unused
    # paws_wiki's 12 rows fit in its sample, so all of them are used.
    assert unused["paws_wiki"] == []


def test_evaluation_reports_unused_pairs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "data"
    write_data(data_dir)
    monkeypatch.setitem(guard_pairs.SAMPLE_SIZES, "quora_qqp", 8)
    out = tmp_path / "guard"
    args = ["--data-dir", str(data_dir), "--out", str(out)]
    args += ["--cache-dir", str(tmp_path / "embeddings")]

    assert guard_verifier.main(args) == 0

    printed = capsys.readouterr().out
    assert "unused pairs (never read by training)" in printed
    assert "quora_qqp-unused" in printed
    assert "paws_wiki-unused" not in printed
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    (unused,) = manifest["unused_pair_metrics"]
    assert unused["dataset"] == "quora_qqp-unused"
    assert unused["paraphrases"] + unused["different"] == 4
