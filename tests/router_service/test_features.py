"""The text features shared by classifier training and serving."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def test_word_ngrams_hash_alike_at_any_position() -> None:
    alone = features.word_ngram_columns("cat")
    later = features.word_ngram_columns("The CAT sat; the cat ran.")

    # Words: the, cat, sat, the, cat, ran; then five pairs, "the cat" twice.
    assert len(alone) == 1
    assert len(later) == 6 + 5
    assert later[1] == alone[0]
    assert later[4] == alone[0]
    assert later[0] == later[3]
    assert later[6] == later[9]
    assert len(set(later[6:].tolist())) == 4


def test_word_ngrams_skip_one_letter_words() -> None:
    assert len(features.word_ngram_columns("a b c")) == 0
    assert len(features.word_ngram_columns("")) == 0
    assert len(features.word_ngram_columns("x dog_2 café")) == 2 + 1


def test_char_ngrams_read_a_bounded_prefix() -> None:
    short = features.char_ngram_columns("ab")
    huge = features.char_ngram_columns("word " * 10_000)

    # " ab " has two 3-grams and one 4-gram.
    assert len(short) == 3
    # Each size n gives len(padded) - n + 1 grams of the 1,000-character prefix.
    assert len(huge) < 3 * features.MAX_CHAR_NGRAM_CHARS
    assert huge.min() >= 0
    assert huge.max() < features.CHAR_HASH_FEATURES


@given(text=st.text(max_size=300))
def test_hashed_columns_stay_in_range(text: str) -> None:
    words = features.word_ngram_columns(text)
    chars = features.char_ngram_columns(text)

    assert words.size == 0 or 0 <= words.min() <= words.max() < 2**15
    assert chars.size == 0 or 0 <= chars.min() <= chars.max() < 2**15


@given(text=st.text(max_size=300))
def test_count_letters_matches_str_methods(text: str) -> None:
    letters = [char for char in text if char.isalpha()]

    assert features.count_letters(text) == (
        len(letters),
        sum(1 for char in letters if char.isupper()),
        sum(1 for char in letters if not char.isascii()),
    )


def test_hashed_block_rows_have_unit_scale() -> None:
    matrix = features.WordNgramHasher().transform(["hello world", "", "big big big"])

    # "big big big" has one word three times and one pair twice: counts 3 and 2.
    norms = np.sqrt(matrix.multiply(matrix).sum(axis=1)).A1
    assert norms[0] == pytest.approx(1.0)
    assert norms[1] == 0.0
    assert norms[2] == pytest.approx(1.0)
    assert sorted(matrix[2].data.tolist()) == pytest.approx(
        [2 / np.sqrt(13), 3 / np.sqrt(13)]
    )
