"""The text features shared by classifier training and serving."""

from __future__ import annotations

import numpy as np
import pytest

from router_service import features
from router_service.features import STATISTIC_NAMES, text_statistics


def _stats(text: str) -> dict[str, float]:
    return dict(zip(STATISTIC_NAMES, text_statistics(text), strict=True))


def test_statistics_have_one_value_per_name() -> None:
    assert len(text_statistics("Hello there?")) == len(STATISTIC_NAMES)


def test_statistics_of_empty_text_are_zero() -> None:
    assert text_statistics("") == [0.0] * len(STATISTIC_NAMES)


def test_statistics_count_questions_and_digits() -> None:
    stats = _stats("Is 12 > 3? Is 4 < 5?")

    assert stats["log_question_marks"] == pytest.approx(np.log1p(2))
    assert stats["digit_fraction"] == pytest.approx(5 / 20)
    assert stats["math_symbol_fraction"] == pytest.approx(2 / 20)


def test_statistics_detect_latex_and_code() -> None:
    latex = _stats(r"Compute $\frac{1}{2} + \sqrt{x}$")
    code = _stats("def f(x):\n    return x + 1;\n")
    prose = _stats("Tell me a story about a brave cat.")

    assert latex["log_latex_commands"] == pytest.approx(np.log1p(2))
    assert code["log_code_tokens"] > prose["log_code_tokens"]
    assert code["code_line_fraction"] == 1.0
    assert prose["code_line_fraction"] == 0.0


def test_non_ascii_fraction_separates_scripts() -> None:
    assert features.non_ascii_letter_fraction("What is the capital?") == 0.0
    assert features.non_ascii_letter_fraction("法国的首都是哪里") == 1.0
    assert features.non_ascii_letter_fraction("Où est la gare?") < 0.2
    assert features.non_ascii_letter_fraction("1234 !!") == 0.0


def test_truncate_bounds_text_length() -> None:
    long_text = "word " * 10_000

    assert len(features.truncate_query(long_text)) == features.MAX_FEATURE_CHARS
    assert features.truncate_query("short") == "short"


def test_feature_pipeline_shape_and_stability() -> None:
    pipeline = features.build_feature_union()
    queries = ["What is 2 + 2?", "", "x" * 50_000, "法国的首都是哪里"]

    first = pipeline.fit_transform(queries)
    second = features.build_feature_union().transform(queries)

    width = (
        features.WORD_HASH_FEATURES + features.CHAR_HASH_FEATURES + len(STATISTIC_NAMES)
    )
    assert first.shape == (4, width)
    assert (first != second).nnz == 0
    assert first.min() >= 0.0


def test_to_dense_accepts_sparse_and_dense() -> None:
    pipeline = features.build_feature_union()
    sparse = pipeline.transform(["a b c"])

    dense = features.ToDense().transform(sparse)

    assert isinstance(dense, np.ndarray)
    assert dense.shape == sparse.shape
    assert features.ToDense().transform(dense).shape == sparse.shape
