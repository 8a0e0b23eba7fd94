"""The query sequence of a replay: Quora question pairs, shuffled, with repeats."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

QQP_FILE = Path("quora_qqp") / "qqp_pairs.csv"
_COLUMNS = ("pair_id", "question1", "question2", "is_duplicate")


@dataclass(frozen=True)
class QuestionPair:
    """One row of qqp_pairs.csv: two questions and the human duplicate label."""

    pair_id: int
    question1: str
    question2: str
    is_duplicate: bool


@dataclass(frozen=True)
class PlannedQuery:
    """One query to send, with the pair it came from.

    `repeat` marks an exact copy of a query that comes earlier in the plan.
    """

    text: str
    pair_id: int
    is_duplicate: bool
    repeat: bool


def load_pairs(data_dir: Path, count: int, rng: random.Random) -> list[QuestionPair]:
    """Read qqp_pairs.csv under data_dir and return `count` random pairs.

    Pairs with an empty question are skipped.

    Raises:
        FileNotFoundError: the CSV file is missing.
        ValueError: the file lacks a column, or has fewer usable pairs than count.
    """
    path = data_dir / QQP_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: pass --data-dir with the folder that contains "
            "quora_qqp/"
        )
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path} is missing the column(s) {', '.join(missing)}; "
                f"expected the columns {', '.join(_COLUMNS)}"
            )
        pairs = [
            QuestionPair(
                pair_id=int(row["pair_id"]),
                question1=row["question1"].strip(),
                question2=row["question2"].strip(),
                is_duplicate=row["is_duplicate"].strip() == "1",
            )
            for row in reader
            if row["question1"].strip() and row["question2"].strip()
        ]
    if count > len(pairs):
        raise ValueError(
            f"--pairs is {count}, but {path} has only {len(pairs)} usable pairs"
        )
    return rng.sample(pairs, count)


def build_plan(
    pairs: list[QuestionPair], repeat_fraction: float, rng: random.Random
) -> list[PlannedQuery]:
    """Shuffle both questions of every pair and add exact repeats.

    round(repeat_fraction * number of questions) randomly chosen questions are sent
    a second time, each at a random later position than its first copy.
    """
    originals = [
        PlannedQuery(text, pair.pair_id, pair.is_duplicate, repeat=False)
        for pair in pairs
        for text in (pair.question1, pair.question2)
    ]
    rng.shuffle(originals)

    # Sort keys: original i sits at i, and its repeat somewhere after it.
    keyed = [(float(i), query) for i, query in enumerate(originals)]
    repeat_count = round(repeat_fraction * len(originals))
    for i in rng.sample(range(len(originals)), repeat_count):
        original = originals[i]
        copy = PlannedQuery(
            original.text, original.pair_id, original.is_duplicate, repeat=True
        )
        keyed.append((rng.uniform(i + 0.5, len(originals)), copy))
    keyed.sort(key=lambda item: item[0])
    return [query for _, query in keyed]
