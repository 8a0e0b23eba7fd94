"""A tiny hand-written copy of the labelled data sets, in the shared data layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from training.datasets import ROUTERBENCH_COLUMNS

ROUTERBENCH_OTHER_MODELS = ("claude-v2", "zero-one-ai/Yi-34B-Chat")

EASY = [
    "What colour is the sky on a clear day in city {i}?",
    "Which animal says moo on farm {i}?",
    "Is water wet in glass {i}?",
]
MIDDLE = [
    "A shop sells {i} apples at 3 dollars each and 2 pears. How much is the bill?",
    "Explain why the boiling point of water drops on mountain {i}.",
]
HARD = [
    "Prove that the sum of the first {i} odd numbers is a perfect square, formally.",
    "Write a lock-free queue in C++ for {i} producers and explain the memory order.",
]


def _texts(templates: list[str], count: int, offset: int = 0) -> list[str]:
    return [templates[i % len(templates)].format(i=i + offset) for i in range(count)]


def _write_routerbench(folder: Path) -> None:
    models = [*ROUTERBENCH_COLUMNS.values(), *ROUTERBENCH_OTHER_MODELS]
    header = ["sample_id", "eval_name", "query", "prompt"]
    header += [f"{model}|correct" for model in models]
    header += [f"{model}|total_cost" for model in models]
    # Outcomes of (simple, medium, complex) models; the two other models are blank.
    plans = {"arc-challenge": (EASY, (1, 1, 1)), "mbpp": (HARD, (0, 0, 1))}
    plans["winogrande"] = (MIDDLE, (0, 1, 1))
    for eval_name, (templates, outcome) in plans.items():
        path = folder / f"routerbench_{eval_name.replace('-', '_')}_train.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for i, text in enumerate(_texts(templates, 12, offset=100)):
                query = f'{text}\nA) yes\nB) no\nPrint only a single choice  from "A" '
                query += 'or "B" without explanation. Answer:'
                row = [f"{eval_name}.{i}", eval_name, query, query]
                row += [str(float(value)) for value in outcome] + ["", ""]
                row += ["0.0001", "0.0003", "0.005", "", ""]
                writer.writerow(row)


def _write_routellm(folder: Path) -> None:
    mmlu = folder / "routellm_mmlu"
    mmlu.mkdir()
    rows = [(text, "1", "1") for text in _texts(MIDDLE, 15, offset=200)]
    rows += [(text, "0", "1") for text in _texts(HARD, 10, offset=200)]
    with (mmlu / "mmlu_routellm.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["subject", "prompt", "mixtral_8x7b_correct", "gpt4_1106_correct"]
        )
        for text, mixtral, gpt4 in rows:
            writer.writerow(["misc", f"{text}\nA. 1\nB. 2\nAnswer:", mixtral, gpt4])
    contaminated = {"eval_prompt": f"{rows[0][0]}\nA. 1\nB. 2\nAnswer:"}
    (mmlu / "contaminated_prompts.jsonl").write_text(json.dumps(contaminated) + "\n")

    gsm8k = folder / "routellm_gsm8k"
    gsm8k.mkdir()
    mixtral = "mistralai/Mixtral-8x7B-Instruct-v0.1"
    with (gsm8k / "gsm8k_responses.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", mixtral, "gpt-4-1106-preview"])
        for text in _texts(MIDDLE, 8, offset=300):
            writer.writerow([text, "True", "True"])
        for text in _texts(HARD, 4, offset=300):
            writer.writerow([text, "False", "False"])
    (gsm8k / "contaminated_prompts.jsonl").write_text("")


def _write_math_and_arena(folder: Path) -> None:
    math = folder / "math_hendrycks"
    math.mkdir()
    for split, offset in (("train", 400), ("test", 500)):
        lines = []
        for i, text in enumerate(_texts(HARD, 10, offset=offset)):
            level = [1, 3, 5, None, 4][i % 5]
            lines.append(json.dumps({"level": level, "problem": f"${i}^2$ {text}"}))
        (math / f"math_{split}.jsonl").write_text("\n".join(lines) + "\n")

    arena = folder / "arena_hard"
    arena.mkdir()
    for version, offset in (("v0.1", 600), ("v2.0", 700)):
        lines = [json.dumps({"prompt": text}) for text in _texts(HARD, 6, offset)]
        (arena / f"arena_hard_{version}_questions.jsonl").write_text(
            "\n".join(lines) + "\n"
        )


@pytest.fixture
def tiny_data_dir(tmp_path: Path) -> Path:
    """A data folder with every file the loaders read and a few dozen rows."""
    root = tmp_path / "data"
    (root / "routerbench_subset").mkdir(parents=True)
    _write_routerbench(root / "routerbench_subset")
    _write_routellm(root)
    _write_math_and_arena(root)
    return root
