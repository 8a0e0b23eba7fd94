"""Read the labelled router data sets into one list of tier-labelled queries.

Each loader reads one folder of the shared data directory and labels every row with
the rules in `training.labels`. Rows are then de-duplicated on normalized text and
split into train, validation and test by a hash of that text, so copies of one
question always fall on the same side of a split.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from router_service.classifier import TIERS
from training.labels import derive_tier, math_level_tier

# RouterBench column prefixes of the three tier models.
ROUTERBENCH_COLUMNS = {
    "simple": "mistralai/mistral-7b-chat",
    "medium": "mistralai/mixtral-8x7b-chat",
    "complex": "gpt-4-1106-preview",
}
ROUTERBENCH_FILES = (
    "routerbench_arc_challenge_train.csv",
    "routerbench_mbpp_train.csv",
    "routerbench_winogrande_train.csv",
)
ARENA_HARD_FILES = (
    "arena_hard_v0.1_questions.jsonl",
    "arena_hard_v2.0_questions.jsonl",
)
MATH_FILES = ("math_train.jsonl", "math_test.jsonl")

# Answer-format instructions that the benchmarks append and real users never write.
# They are removed so that the classifier cannot recognise a benchmark by them.
_BENCHMARK_SUFFIX = re.compile(
    r"\s*(Print only a single choice\s+from .*? without explanation\.)?\s*Answer:\s*$",
    re.DOTALL,
)

# Share of questions, by text hash, in the validation and the test split.
VALIDATION_PERCENT = 10
TEST_PERCENT = 20


@dataclass(frozen=True)
class LabelledQuery:
    """One question with its tier label and, where recorded, each tier's outcome.

    `correct_by_tier` and `cost_by_tier_usd` hold the outcome and the cost in USD of
    each tier's model; a tier without a record is absent.
    """

    text: str
    tier: str
    source: str
    correct_by_tier: Mapping[str, bool] = field(default_factory=dict)
    cost_by_tier_usd: Mapping[str, float] = field(default_factory=dict)


def strip_benchmark_suffix(prompt: str) -> str:
    """Remove a trailing benchmark answer instruction such as "Answer:"."""
    return _BENCHMARK_SUFFIX.sub("", prompt).strip()


def normalize_text(text: str) -> str:
    """Return the de-duplication key of a question: lower case, single spaces."""
    return " ".join(text.lower().split())


def _labelled(
    text: str,
    source: str,
    correct: Mapping[str, bool | None],
    cost: Mapping[str, float] | None = None,
) -> LabelledQuery | None:
    tier = derive_tier(correct)
    if tier is None or not text.strip():
        return None
    known = {name: value for name, value in correct.items() if value is not None}
    return LabelledQuery(text, tier, source, known, dict(cost or {}))


def _optional_float(value: str) -> float | None:
    return float(value) if value.strip() else None


def load_routerbench(folder: Path) -> Iterator[LabelledQuery]:
    """Yield RouterBench rows (ARC-Challenge, MBPP, WinoGrande) with outcomes and cost.

    A blank correctness cell means no outcome for that model.
    """
    for name in ROUTERBENCH_FILES:
        with (folder / name).open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                correct: dict[str, bool | None] = {}
                cost: dict[str, float] = {}
                for tier, column in ROUTERBENCH_COLUMNS.items():
                    outcome = _optional_float(row[f"{column}|correct"])
                    correct[tier] = None if outcome is None else outcome >= 0.5
                    call_cost = _optional_float(row[f"{column}|total_cost"])
                    if call_cost is not None:
                        cost[tier] = call_cost
                text = strip_benchmark_suffix(row["query"])
                source = f"routerbench_{row['eval_name']}"
                item = _labelled(text, source, correct, cost)
                if item is not None:
                    yield item


def _contaminated_prompts(path: Path) -> set[str]:
    with path.open(encoding="utf-8") as handle:
        return {normalize_text(json.loads(line)["eval_prompt"]) for line in handle}


def load_routellm_mmlu(folder: Path) -> Iterator[LabelledQuery]:
    """Yield MMLU rows labelled from Mixtral (medium) and GPT-4 (complex) outcomes.

    The prompts that RouteLLM lists as contaminated are skipped.
    """
    skip = _contaminated_prompts(folder / "contaminated_prompts.jsonl")
    with (folder / "mmlu_routellm.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if normalize_text(row["prompt"]) in skip:
                continue
            correct = {
                "medium": row["mixtral_8x7b_correct"].strip() == "1",
                "complex": row["gpt4_1106_correct"].strip() == "1",
            }
            text = strip_benchmark_suffix(row["prompt"])
            item = _labelled(text, "routellm_mmlu", correct)
            if item is not None:
                yield item


def load_routellm_gsm8k(folder: Path) -> Iterator[LabelledQuery]:
    """Yield GSM8K test rows labelled from Mixtral and GPT-4 outcomes."""
    skip = _contaminated_prompts(folder / "contaminated_prompts.jsonl")
    path = folder / "gsm8k_responses.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if normalize_text(row["prompt"]) in skip:
                continue
            correct = {
                "medium": row["mistralai/Mixtral-8x7B-Instruct-v0.1"] == "True",
                "complex": row["gpt-4-1106-preview"] == "True",
            }
            item = _labelled(row["prompt"].strip(), "routellm_gsm8k", correct)
            if item is not None:
                yield item


def load_math(folder: Path) -> Iterator[LabelledQuery]:
    """Yield MATH problems labelled by competition level (`math_level_tier`)."""
    for name in MATH_FILES:
        with (folder / name).open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                tier = math_level_tier(row["level"])
                if tier is not None and row["problem"].strip():
                    yield LabelledQuery(row["problem"].strip(), tier, "math_hendrycks")


def load_arena_hard(folder: Path) -> Iterator[LabelledQuery]:
    """Yield Arena-Hard prompts, all labelled complex: each was selected as hard."""
    for name in ARENA_HARD_FILES:
        with (folder / name).open(encoding="utf-8") as handle:
            for line in handle:
                prompt = json.loads(line)["prompt"].strip()
                if prompt:
                    yield LabelledQuery(prompt, "complex", "arena_hard")


SOURCES = {
    "routerbench_subset": load_routerbench,
    "routellm_mmlu": load_routellm_mmlu,
    "routellm_gsm8k": load_routellm_gsm8k,
    "math_hendrycks": load_math,
    "arena_hard": load_arena_hard,
}


def source_files(data_dir: Path) -> list[Path]:
    """List every file the loaders read, in a fixed order."""
    files = [data_dir / "routerbench_subset" / name for name in ROUTERBENCH_FILES]
    files += [
        data_dir / "routellm_mmlu" / "mmlu_routellm.csv",
        data_dir / "routellm_mmlu" / "contaminated_prompts.jsonl",
        data_dir / "routellm_gsm8k" / "gsm8k_responses.csv",
        data_dir / "routellm_gsm8k" / "contaminated_prompts.jsonl",
    ]
    files += [data_dir / "math_hendrycks" / name for name in MATH_FILES]
    files += [data_dir / "arena_hard" / name for name in ARENA_HARD_FILES]
    return files


def data_fingerprint(data_dir: Path) -> str:
    """Hash the names and bytes of every source file into one SHA-256 hex digest."""
    digest = hashlib.sha256()
    for path in source_files(data_dir):
        digest.update(str(path.relative_to(data_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_all(data_dir: Path) -> list[LabelledQuery]:
    """Load and label every source, de-duplicated.

    Raises:
        FileNotFoundError: a source file is missing; the message names the folder.
    """
    missing = [path for path in source_files(data_dir) if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"training data not found: {missing[0]} is missing. Pass --data-dir with "
            "the folder that contains routellm_mmlu/, routerbench_subset/ and the rest"
        )
    items: list[LabelledQuery] = []
    for folder, loader in SOURCES.items():
        items.extend(loader(data_dir / folder))
    return deduplicate(items)


def deduplicate(items: Iterable[LabelledQuery]) -> list[LabelledQuery]:
    """Keep one row per normalized text: the first, relabelled with the hardest tier.

    Taking the hardest label of the copies errs towards a stronger model, which
    costs money but not answer quality.
    """
    first: dict[str, LabelledQuery] = {}
    hardest: dict[str, int] = {}
    for item in items:
        key = normalize_text(item.text)
        rank = TIERS.index(item.tier)
        first.setdefault(key, item)
        hardest[key] = max(hardest.get(key, 0), rank)
    return [
        item
        if TIERS.index(item.tier) == hardest[key]
        else LabelledQuery(
            item.text,
            TIERS[hardest[key]],
            item.source,
            item.correct_by_tier,
            item.cost_by_tier_usd,
        )
        for key, item in first.items()
    ]


def split_name(text: str) -> str:
    """Assign a question to "train", "validation" or "test" by a hash of its text.

    The assignment depends on the text alone, so it is stable across runs, seeds
    and data set growth.
    """
    key = normalize_text(text).encode()
    bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % 100
    if bucket < TEST_PERCENT:
        return "test"
    if bucket < TEST_PERCENT + VALIDATION_PERCENT:
        return "validation"
    return "train"


def split(items: Iterable[LabelledQuery]) -> dict[str, list[LabelledQuery]]:
    """Group items into the train, validation and test splits of `split_name`."""
    groups: dict[str, list[LabelledQuery]] = {"train": [], "validation": [], "test": []}
    for item in items:
        groups[split_name(item.text)].append(item)
    return groups
