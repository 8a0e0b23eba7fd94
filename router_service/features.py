"""Text features of a query, shared by classifier training and the router.

Training builds its scikit-learn pipeline from `build_feature_union`, and the router
loads that fitted pipeline, so both sides run the same code on the same text. Any
change to what a feature computes must bump FEATURE_VERSION, because a saved artifact
records the version it was trained with and the loader rejects a mismatch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline

FEATURE_VERSION = "text-v1"

# Features look at the first 4,000 characters only, so the cost of one prediction
# stays bounded however long the query is.
MAX_FEATURE_CHARS = 4000

WORD_HASH_FEATURES = 2**15
CHAR_HASH_FEATURES = 2**15

_WORD = re.compile(r"[^\W\d_]+")
_DIGIT = re.compile(r"\d")
_MATH_SYMBOL = re.compile(r"[=+\-*/^<>%√∑∫π∞≤≥≠±\u00d7÷]")
_LATEX_COMMAND = re.compile(r"\\[a-zA-Z]+")
_SENTENCE_END = re.compile(r"[.!?](\s|$)")
_CODE_TOKEN = re.compile(
    r"```|\bdef\b|\breturn\b|\bimport\b|#include|\bclass\b|\bfunction\b|\bconst\b"
    r"|\bpublic\b|\bvoid\b|=>|==|!=|&&|\|\||[{};]"
)
_CODE_LINE = re.compile(r"^\s*(\S.*[;{}:)\]]|#include.*|import .*|from \S+ import .*)$")

STATISTIC_NAMES = (
    "log_chars",
    "log_words",
    "log_lines",
    "digit_fraction",
    "math_symbol_fraction",
    "log_latex_commands",
    "log_code_tokens",
    "code_line_fraction",
    "log_question_marks",
    "log_sentences",
    "mean_word_length",
    "uppercase_fraction",
    "non_ascii_letter_fraction",
)


def truncate_query(text: str) -> str:
    """Cut a query to the prefix that the features read."""
    return text[:MAX_FEATURE_CHARS]


def non_ascii_letter_fraction(text: str) -> float:
    """Fraction of letters outside ASCII: near 0 for English, near 1 for Chinese."""
    letters = [char for char in text if char.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for char in letters if not char.isascii()) / len(letters)


def code_line_fraction(text: str) -> float:
    """Fraction of non-blank lines that end or start like a line of source code."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return 0.0
    return sum(1 for line in lines if _CODE_LINE.match(line)) / len(lines)


def text_statistics(text: str) -> list[float]:
    """Compute the cheap numeric features, in the order of STATISTIC_NAMES.

    Counts are log1p-scaled and the rest are fractions or short lengths, so every
    value stays within about 0-10 and a linear model needs no fitted scaler.
    """
    chars = max(len(text), 1)
    words = _WORD.findall(text)
    letters = [char for char in text if char.isalpha()]
    return [
        float(np.log1p(len(text))),
        float(np.log1p(len(words))),
        float(np.log1p(text.count("\n") + 1 if text else 0)),
        len(_DIGIT.findall(text)) / chars,
        len(_MATH_SYMBOL.findall(text)) / chars,
        float(np.log1p(len(_LATEX_COMMAND.findall(text)))),
        float(np.log1p(len(_CODE_TOKEN.findall(text)))),
        code_line_fraction(text),
        float(np.log1p(text.count("?"))),
        float(np.log1p(len(_SENTENCE_END.findall(text)))),
        min(sum(len(word) for word in words) / len(words), 20.0) / 10 if words else 0.0,
        sum(1 for char in letters if char.isupper()) / len(letters) if letters else 0.0,
        non_ascii_letter_fraction(text),
    ]


class TruncateQueries(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Stateless pipeline step that applies `truncate_query` to every query."""

    def fit(self, queries: Iterable[str], y: Any = None) -> TruncateQueries:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def transform(self, queries: Iterable[str]) -> list[str]:
        return [truncate_query(query) for query in queries]


class TextStatistics(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Stateless pipeline step that maps each query to `text_statistics`."""

    def fit(self, queries: Iterable[str], y: Any = None) -> TextStatistics:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def transform(self, queries: Iterable[str]) -> NDArray[np.float64]:
        rows = [text_statistics(query) for query in queries]
        return np.asarray(rows, dtype=np.float64).reshape(-1, len(STATISTIC_NAMES))

    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.str_]:
        return np.asarray(STATISTIC_NAMES, dtype=str)


def build_feature_union() -> Pipeline:
    """Build the unfitted text-to-features pipeline: truncation, then hashed n-grams.

    Word 1-2-grams and character 3-5-grams are hashed (no vocabulary to fit or store)
    with non-negative counts, so chi-squared feature selection can follow. The
    statistics from `text_statistics` are appended as dense columns.
    """
    words = HashingVectorizer(
        n_features=WORD_HASH_FEATURES,
        ngram_range=(1, 2),
        alternate_sign=False,
        norm="l2",
        dtype=np.float64,
    )
    chars = HashingVectorizer(
        n_features=CHAR_HASH_FEATURES,
        analyzer="char_wb",
        ngram_range=(3, 5),
        alternate_sign=False,
        norm="l2",
        dtype=np.float64,
    )
    union = FeatureUnion(
        [("words", words), ("chars", chars), ("statistics", TextStatistics())]
    )
    return Pipeline([("truncate", TruncateQueries()), ("features", union)])


class ToDense(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Stateless pipeline step that turns a sparse matrix into a dense array.

    Tree ensembles such as HistGradientBoostingClassifier accept dense input only.
    """

    def fit(self, matrix: Any, y: Any = None) -> ToDense:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def transform(self, matrix: Any) -> NDArray[np.float64]:
        dense = matrix.toarray() if hasattr(matrix, "toarray") else matrix
        return np.asarray(dense, dtype=np.float64)
