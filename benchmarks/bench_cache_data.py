"""Labelled query pairs for ``make bench-cache``: the shared sets and the user's files.

Every pair is two queries and whether one cached answer serves both. Built-in sets
come from the shared data folder. Pairs that trained the false-hit guard's verifier
are left out, so the guard is measured only on pairs it never saw. A user's own
pairs come from CSV or JSONL files in the format described in
``read_pairs_file``.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cache_service.pair_eval import LabelledPair, load_fow, load_paws, load_quora

# STS grades run from 0 (other topic) to 5 (equivalent). A grade of 4 reads "mostly
# equivalent, unimportant details differ", so one answer serves both. Below 3 the
# sentences differ in important information, so serving one's answer to the other
# is a false hit. Pairs from 3 up to 4 are ambiguous and left out.
STSB_POSITIVE_MIN_SCORE = 4.0
STSB_NEGATIVE_BELOW_SCORE = 3.0
STSB_FILES = ("stsb_dev.csv", "stsb_test.csv")

# Column names accepted in a user's pairs file, in order of preference.
FIRST_COLUMNS = ("a", "question1", "sentence1")
SECOND_COLUMNS = ("b", "question2", "sentence2")
LABEL_COLUMNS = ("same_answer", "is_duplicate", "label")
TRUE_VALUES = {"1", "true", "yes"}
FALSE_VALUES = {"0", "false", "no"}


class PairsFileError(ValueError):
    """A pairs file is missing, unreadable or not in the documented format."""


@dataclass(frozen=True)
class PairSet:
    """The pairs of one set, and how many were left out and why."""

    name: str
    pairs: list[LabelledPair]
    available: int
    excluded_guard_training: int = 0
    excluded_ambiguous: int = 0


def load_stsb(data_dir: Path) -> tuple[list[LabelledPair], int]:
    """Read the stsb dev and test splits, binarized by grade.

    Returns the pairs and the number of ambiguous pairs (grade 3 up to 4) left out.
    """
    pairs: list[LabelledPair] = []
    ambiguous = 0
    for name in STSB_FILES:
        with (data_dir / "stsb" / name).open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                score = float(row["score"])
                if score >= STSB_POSITIVE_MIN_SCORE:
                    pairs.append(LabelledPair(row["sentence1"], row["sentence2"], True))
                elif score < STSB_NEGATIVE_BELOW_SCORE:
                    pairs.append(
                        LabelledPair(row["sentence1"], row["sentence2"], False)
                    )
                else:
                    ambiguous += 1
    return pairs, ambiguous


BUILT_IN_LOADERS: dict[str, Callable[[Path], list[LabelledPair]]] = {
    "quora_qqp": load_quora,
    "paws_wiki": load_paws,
    "fow_cache_pairs": load_fow,
}
BUILT_IN_SETS = (*BUILT_IN_LOADERS, "stsb")


def guard_training_pairs(data_dir: Path) -> set[tuple[str, str]]:
    """Return the (first, second) texts of every pair the guard's verifier trained on.

    The verifier trains on the first half of a seeded shuffle of each set, as
    ``python -m training.guard_verifier`` does with its default seed 0.
    """
    from training.guard_pairs import load_pairs
    from training.guard_verifier import split_indices

    seen: set[tuple[str, str]] = set()
    for pairs in load_pairs(data_dir).values():
        training_rows, _ = split_indices(len(pairs), 0)
        seen.update((pairs[row].first, pairs[row].second) for row in training_rows)
    return seen


def load_built_in(
    name: str, data_dir: Path, limit: int, seed: int, exclude: set[tuple[str, str]]
) -> PairSet:
    """Read one shared set, drop the guard's training pairs, sample ``limit`` pairs."""
    ambiguous = 0
    if name == "stsb":
        everything, ambiguous = load_stsb(data_dir)
    else:
        everything = BUILT_IN_LOADERS[name](data_dir)
    eligible = [pair for pair in everything if (pair.first, pair.second) not in exclude]
    return PairSet(
        name=name,
        pairs=sample_pairs(eligible, limit, seed),
        available=len(eligible),
        excluded_guard_training=len(everything) - len(eligible),
        excluded_ambiguous=ambiguous,
    )


def sample_pairs(
    pairs: list[LabelledPair], limit: int, seed: int
) -> list[LabelledPair]:
    """Return at most ``limit`` pairs in a seeded random order."""
    chosen = list(pairs)
    random.Random(seed).shuffle(chosen)
    return chosen[:limit]


def read_pairs_file(path: Path) -> list[LabelledPair]:
    """Read a user's labelled pairs from a CSV file with a header row, or JSONL.

    Each row has two query texts and a label. The texts are columns ``a`` and ``b``
    (or ``question1``/``question2``, or ``sentence1``/``sentence2``). The label is
    ``same_answer`` (or ``is_duplicate``, or ``label``): true, 1 or yes when one
    cached answer serves both queries, false, 0 or no when it does not. A file whose
    name ends in ``.jsonl`` is read as one JSON object per line, anything else as CSV.

    Raises:
        PairsFileError: the file cannot be read, a column is missing, a label is
            not one of the accepted values, or the file has no pairs.
    """
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            if path.suffix == ".jsonl":
                rows = [_json_row(line, path) for line in handle if line.strip()]
            else:
                rows = list(csv.DictReader(handle))
    except OSError as error:
        raise PairsFileError(f"cannot read pairs file {path}: {error}") from None
    if not rows:
        raise PairsFileError(f"pairs file {path} contains no pairs")
    first = _pick_column(rows[0], FIRST_COLUMNS, path)
    second = _pick_column(rows[0], SECOND_COLUMNS, path)
    label = _pick_column(rows[0], LABEL_COLUMNS, path)
    return [
        LabelledPair(
            str(row[first]), str(row[second]), _parse_label(row[label], path, number)
        )
        for number, row in enumerate(rows, start=1)
    ]


def _json_row(line: str, path: Path) -> dict[str, object]:
    try:
        row = json.loads(line)
    except ValueError as error:
        raise PairsFileError(f"pairs file {path} has invalid JSON: {error}") from None
    if not isinstance(row, dict):
        raise PairsFileError(f"pairs file {path} must contain one JSON object per line")
    return row


def _pick_column(row: dict[str, object], names: Iterable[str], path: Path) -> str:
    for name in names:
        if name in row:
            return name
    options = " or ".join(names)
    raise PairsFileError(
        f"pairs file {path} has no column {options}; found {sorted(row)}. "
        "Name the columns a, b and same_answer."
    )


def _parse_label(value: object, path: Path, row_number: int) -> bool:
    text = str(value).strip().lower()
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    raise PairsFileError(
        f"pairs file {path}, row {row_number}: label {value!r} is invalid; "
        "use true/false, 1/0 or yes/no."
    )
