"""Measure the semantic layer on labelled question pairs: hit and false-hit rates.

``python -m cache_service.pair_eval --data-dir ../shared/data`` embeds a seeded sample
of pairs from quora_qqp, paws_wiki and fow_cache_pairs and counts, at the similarity
threshold, how often a true paraphrase would hit and how often a pair with a
different meaning would hit (a false hit). Plain cosine only: this is the baseline
that a false-hit guard has to improve on.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cache_service.embedding import Embedder, SentenceTransformerEmbedder

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@dataclass(frozen=True)
class LabelledPair:
    """Two queries and whether one cached answer serves both."""

    first: str
    second: str
    same_meaning: bool


@dataclass(frozen=True)
class PairRates:
    """Hit rate on paraphrases and false-hit rate on different-meaning pairs."""

    dataset: str
    paraphrases: int
    different: int
    hit_rate: float
    false_hit_rate: float


def load_quora(data_dir: Path) -> list[LabelledPair]:
    """Read quora_qqp/qqp_pairs.csv (is_duplicate 1 means the same question)."""
    with (data_dir / "quora_qqp" / "qqp_pairs.csv").open(encoding="utf-8") as handle:
        return [
            LabelledPair(row["question1"], row["question2"], row["is_duplicate"] == "1")
            for row in csv.DictReader(handle)
        ]


def load_paws(data_dir: Path) -> list[LabelledPair]:
    """Read paws_wiki/paws_dev.csv (label 0 pairs are word-swap hard negatives)."""
    with (data_dir / "paws_wiki" / "paws_dev.csv").open(encoding="utf-8") as handle:
        return [
            LabelledPair(row["sentence1"], row["sentence2"], row["label"] == "1")
            for row in csv.DictReader(handle)
        ]


def load_fow(data_dir: Path) -> list[LabelledPair]:
    """Read fow_cache_pairs/pairs.jsonl (same_answer false pairs are hard negatives)."""
    path = data_dir / "fow_cache_pairs" / "pairs.jsonl"
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [LabelledPair(row["a"], row["b"], bool(row["same_answer"])) for row in rows]


LOADERS = {"quora_qqp": load_quora, "paws_wiki": load_paws, "fow_cache_pairs": load_fow}


def measure(
    dataset: str,
    pairs: Sequence[LabelledPair],
    embedder: Embedder,
    threshold: float,
) -> PairRates:
    """Embed both sides of every pair and count hits at ``threshold``."""
    first = embedder.embed([pair.first for pair in pairs])
    second = embedder.embed([pair.second for pair in pairs])
    hits = np.einsum("ij,ij->i", first, second) >= threshold
    same = np.array([pair.same_meaning for pair in pairs], dtype=bool)
    return PairRates(
        dataset=dataset,
        paraphrases=int(same.sum()),
        different=int((~same).sum()),
        hit_rate=float(hits[same].mean()) if same.any() else 0.0,
        false_hit_rate=float(hits[~same].mean()) if (~same).any() else 0.0,
    )


def sample(pairs: list[LabelledPair], limit: int, seed: int) -> list[LabelledPair]:
    """Return at most ``limit`` pairs, drawn with ``seed`` so runs repeat."""
    if len(pairs) <= limit:
        return pairs
    return random.Random(seed).sample(pairs, limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cache_service.pair_eval", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--threshold", type=float, default=0.85)
    parser.add_argument(
        "--pairs", type=int, default=2000, help="max pairs sampled per dataset"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    embedder = SentenceTransformerEmbedder.load()
    print(f"threshold {args.threshold}, up to {args.pairs} pairs per dataset")
    print(
        f"{'dataset':<18}{'paraphrases':>12}{'hit rate':>10}{'different':>11}"
        f"{'false hits':>12}"
    )
    for dataset, load in LOADERS.items():
        pairs = sample(load(args.data_dir), args.pairs, args.seed)
        rates = measure(dataset, pairs, embedder, args.threshold)
        print(
            f"{dataset:<18}{rates.paraphrases:>12}{rates.hit_rate:>10.1%}"
            f"{rates.different:>11}{rates.false_hit_rate:>12.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
