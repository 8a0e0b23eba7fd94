"""Loading, cleaning, de-duplicating and splitting the labelled data sets."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from training import datasets
from training.datasets import LabelledQuery


def test_load_all_labels_every_source(tiny_data_dir: Path) -> None:
    items = datasets.load_all(tiny_data_dir)
    counts = collections.Counter((item.source, item.tier) for item in items)

    assert counts[("routerbench_arc-challenge", "simple")] == 12
    assert counts[("routerbench_winogrande", "medium")] == 12
    assert counts[("routerbench_mbpp", "complex")] == 12
    assert counts[("routellm_mmlu", "medium")] == 14  # one contaminated row skipped
    assert counts[("routellm_mmlu", "complex")] == 10
    assert counts[("routellm_gsm8k", "medium")] == 8
    assert counts[("routellm_gsm8k", "complex")] == 4
    assert counts[("arena_hard", "complex")] == 12


def test_math_rows_without_level_are_dropped(tiny_data_dir: Path) -> None:
    math = list(datasets.load_math(tiny_data_dir / "math_hendrycks"))
    tiers = collections.Counter(item.tier for item in math)

    assert len(math) == 16  # 20 problems, 4 with level None
    assert tiers == {"medium": 4, "complex": 12}


def test_routerbench_keeps_tier_outcomes_and_costs(tiny_data_dir: Path) -> None:
    rows = list(datasets.load_routerbench(tiny_data_dir / "routerbench_subset"))
    winogrande = next(row for row in rows if row.source == "routerbench_winogrande")

    assert winogrande.correct_by_tier == {
        "simple": False,
        "medium": True,
        "complex": True,
    }
    assert winogrande.cost_by_tier_usd == {
        "simple": 0.0001,
        "medium": 0.0003,
        "complex": 0.005,
    }


def test_routerbench_query_loses_answer_instruction(tiny_data_dir: Path) -> None:
    rows = list(datasets.load_routerbench(tiny_data_dir / "routerbench_subset"))

    assert all("Print only" not in row.text for row in rows)
    assert all(not row.text.endswith("Answer:") for row in rows)
    assert rows[0].text.endswith("B) no")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("What is 2+2?\nA. 3\nB. 4\nAnswer:", "What is 2+2?\nA. 3\nB. 4"),
        (
            'Pick one.\nA) x\nPrint only a single choice  from "A" or "B" '
            "without explanation. Answer:",
            "Pick one.\nA) x",
        ),
        ("Answer: the question below", "Answer: the question below"),
        ("No suffix here", "No suffix here"),
    ],
)
def test_strip_benchmark_suffix(prompt: str, expected: str) -> None:
    assert datasets.strip_benchmark_suffix(prompt) == expected


def test_deduplicate_keeps_hardest_label() -> None:
    items = [
        LabelledQuery("What is 2 + 2?", "simple", "a"),
        LabelledQuery("what is  2 + 2?", "complex", "b"),
        LabelledQuery("What is 3 + 3?", "medium", "a"),
    ]

    unique = datasets.deduplicate(items)

    assert [item.text for item in unique] == ["What is 2 + 2?", "What is 3 + 3?"]
    assert [item.tier for item in unique] == ["complex", "medium"]
    assert unique[0].source == "a"


def test_split_puts_copies_of_question_together() -> None:
    texts = [f"Question number {i}?" for i in range(400)]
    for text in texts:
        assert datasets.split_name(text) == datasets.split_name(f"  {text.upper()} ")


def test_split_sizes_follow_percentages() -> None:
    items = [LabelledQuery(f"Question number {i}?", "simple", "a") for i in range(5000)]

    groups = datasets.split(items)

    assert abs(len(groups["test"]) / 5000 - datasets.TEST_PERCENT / 100) < 0.03
    validation_share = len(groups["validation"]) / 5000
    assert abs(validation_share - datasets.VALIDATION_PERCENT / 100) < 0.03
    assert sum(len(group) for group in groups.values()) == 5000


def test_fingerprint_changes_with_any_data_byte(tiny_data_dir: Path) -> None:
    before = datasets.data_fingerprint(tiny_data_dir)
    arena = tiny_data_dir / "arena_hard" / "arena_hard_v0.1_questions.jsonl"
    arena.write_text(arena.read_text() + "\n")

    assert datasets.data_fingerprint(tiny_data_dir) != before


def test_load_all_names_missing_file(tiny_data_dir: Path) -> None:
    (tiny_data_dir / "math_hendrycks" / "math_test.jsonl").unlink()

    with pytest.raises(FileNotFoundError, match=r"math_test\.jsonl is missing"):
        datasets.load_all(tiny_data_dir)
