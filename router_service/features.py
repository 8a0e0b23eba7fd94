"""Text features of a query, shared by classifier training and the router.

Training builds its scikit-learn pipeline from `build_feature_union`, and the router
loads that fitted pipeline, so both sides run the same code on the same text. Each
feature block computes one query's non-zero columns with `sparse_row`, which the
router's fast path (`router_service.linear_scoring`) calls directly. Any change to
what a feature computes must bump FEATURE_VERSION, because a saved artifact records
the version it was trained with and the loader rejects a mismatch.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import FeatureUnion, Pipeline

FEATURE_VERSION = "text-v2"

# Word n-grams and statistics read the first 2,000 characters and character n-grams
# the first 1,000, so the cost of one prediction stays bounded however long the
# query is. 99 % of the held-out test questions are shorter than 2,300 characters.
MAX_FEATURE_CHARS = 2000
MAX_CHAR_NGRAM_CHARS = 1000

# Both hashed blocks have a power-of-two width, so a hash maps to a column by a mask.
WORD_HASH_BITS = 15
CHAR_HASH_BITS = 15
WORD_HASH_FEATURES = 2**WORD_HASH_BITS
CHAR_HASH_FEATURES = 2**CHAR_HASH_BITS
CHAR_NGRAM_SIZES = (3, 4, 5)

_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")
_MATH_SYMBOL = re.compile(r"[=+\-*/^<>%√∑∫π∞≤≥≠±\u00d7÷]")
_LATEX_COMMAND = re.compile(r"\\[a-zA-Z]+")
_SENTENCE_END = re.compile(r"[.!?](\s|$)")
_CODE_LINE = re.compile(r"^\s*(\S.*[;{}:)\]]|#include.*|import .*|from \S+ import .*)$")
_CODE_KEYWORDS = frozenset(
    ("def", "return", "import", "class", "function", "const", "public", "void")
)
_CODE_SYMBOLS = ("```", "#include", "=>", "==", "!=", "&&", "||", "{", "}", ";")
_ASCII_LETTERS = string.ascii_letters.encode("ascii")
_ASCII_UPPERCASE = string.ascii_uppercase.encode("ascii")
_ASCII_DIGITS = string.digits.encode("ascii")

# Polynomial hashes of n-grams in uint64 arithmetic, which wraps modulo 2**64.
# The base is odd, so it has an inverse modulo 2**64.
_ROLLING_BASE = np.uint64(0x100000001B3)
_INVERSE_ROLLING_BASE = np.uint64(pow(0x100000001B3, -1, 2**64))
_BIGRAM_SALT = np.uint64(0x2545F4914F6CDD1D)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_ASCII_WORD_CHAR = np.asarray([chr(code).isalnum() for code in range(128)])
_ASCII_WORD_CHAR[ord("_")] = True

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

SparseRow = tuple[NDArray[np.int64], NDArray[np.float64]]


def truncate_query(text: str) -> str:
    """Cut a query to the prefix that the features read."""
    return text[:MAX_FEATURE_CHARS]


def count_letters(text: str) -> tuple[int, int, int]:
    """Count letters, upper-case letters and non-ASCII letters (`str.isalpha`).

    ASCII characters are counted with `bytes.translate`, which runs in C, and only
    non-ASCII characters go through a Python loop.
    """
    ascii_bytes = text.encode("ascii", "ignore")
    letters = len(ascii_bytes) - len(ascii_bytes.translate(None, _ASCII_LETTERS))
    upper = len(ascii_bytes) - len(ascii_bytes.translate(None, _ASCII_UPPERCASE))
    non_ascii = 0
    for run in _NON_ASCII_RUN.findall(text):
        for char in run:
            if char.isalpha():
                non_ascii += 1
                upper += char.isupper()
    return letters + non_ascii, upper, non_ascii


def non_ascii_letter_fraction(text: str) -> float:
    """Fraction of letters outside ASCII: near 0 for English, near 1 for Chinese."""
    letters, _, non_ascii = count_letters(text)
    return non_ascii / letters if letters else 0.0


def code_line_fraction(text: str) -> float:
    """Fraction of non-blank lines that end or start like a line of source code."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return 0.0
    return sum(1 for line in lines if _CODE_LINE.match(line)) / len(lines)


def count_code_tokens(text: str, words: list[str]) -> int:
    """Count code keywords among `words` and code symbols such as `{`, `==`, `;`."""
    keywords = sum(map(_CODE_KEYWORDS.__contains__, words))
    return keywords + sum(text.count(symbol) for symbol in _CODE_SYMBOLS)


def text_statistics(text: str) -> list[float]:
    """Compute the cheap numeric features, in the order of STATISTIC_NAMES.

    Words are the whitespace-separated tokens. Counts are log1p-scaled and the rest
    are fractions or short lengths, so every value stays within about 0-10 and a
    linear model needs no fitted scaler.
    """
    chars = max(len(text), 1)
    words = text.split()
    letters, upper, non_ascii = count_letters(text)
    ascii_bytes = text.encode("ascii", "ignore")
    digits = len(ascii_bytes) - len(ascii_bytes.translate(None, _ASCII_DIGITS))
    word_chars = sum(map(len, words))
    return [
        float(np.log1p(len(text))),
        float(np.log1p(len(words))),
        float(np.log1p(text.count("\n") + 1 if text else 0)),
        digits / chars,
        len(_MATH_SYMBOL.findall(text)) / chars,
        float(np.log1p(len(_LATEX_COMMAND.findall(text)))),
        float(np.log1p(count_code_tokens(text, words))),
        code_line_fraction(text),
        float(np.log1p(text.count("?"))),
        float(np.log1p(len(_SENTENCE_END.findall(text)))),
        min(word_chars / len(words), 20.0) / 10 if words else 0.0,
        upper / letters if letters else 0.0,
        non_ascii / letters if letters else 0.0,
    ]


def l2_normalized_counts(columns: NDArray[np.int64]) -> SparseRow:
    """Count repeated columns and scale the counts to unit L2 norm.

    Unit rows keep the hashed blocks on the same scale for every query length,
    which also keeps the saga solver's step size large.
    """
    unique, counts = np.unique(columns, return_counts=True)
    values = counts.astype(np.float64)
    norm = float(np.sqrt(values @ values))
    return unique, values / norm if norm else values


def _codepoints(text: str) -> NDArray[np.uint64]:
    encoded = text.encode("utf-32-le", "surrogatepass")
    return np.frombuffer(encoded, dtype=np.uint32).astype(np.uint64)


def _powers(base: np.uint64, count: int) -> NDArray[np.uint64]:
    powers = np.full(count, base, dtype=np.uint64)
    powers[0] = 1
    return np.cumprod(powers, dtype=np.uint64)


def _hash_columns(hashes: NDArray[np.uint64], bits: int) -> NDArray[np.int64]:
    # The top bits of a multiplicative mix are well spread even for similar inputs.
    return ((hashes * _MIX) >> np.uint64(64 - bits)).astype(np.int64)


def word_ngram_columns(text: str) -> NDArray[np.int64]:
    """Hash each lower-cased word 1-gram and 2-gram of `text` to a column.

    A word is a run of two or more word characters: ASCII letters, digits and
    `_`, plus every non-ASCII character (a simplification that keeps the
    tokenizer vectorized). A word's hash is a polynomial of its code points, read
    as differences of one cumulative sum, so no Python loop runs per word.
    """
    codes = _codepoints(text.lower())
    if len(codes) < 2:
        return np.zeros(0, dtype=np.int64)
    is_word = np.where(codes < 128, _ASCII_WORD_CHAR[np.minimum(codes, 127)], True)
    edges = np.flatnonzero(np.diff(is_word.astype(np.int8), prepend=0, append=0))
    starts, ends = edges[::2], edges[1::2]
    long_enough = ends - starts >= 2
    starts, ends = starts[long_enough], ends[long_enough]

    # prefix[i] = sum of codes[k] * inverse_base**k for k < i, in wrapping uint64.
    inverse_powers = _powers(_INVERSE_ROLLING_BASE, len(codes))
    prefix = np.zeros(len(codes) + 1, dtype=np.uint64)
    np.cumsum(codes * inverse_powers, dtype=np.uint64, out=prefix[1:])
    shifts = _powers(_ROLLING_BASE, len(codes))
    words = (prefix[ends] - prefix[starts]) * shifts[starts]
    pairs = words[:-1] * _ROLLING_BASE + words[1:] + _BIGRAM_SALT
    return _hash_columns(np.concatenate((words, pairs)), WORD_HASH_BITS)


def char_ngram_columns(text: str) -> NDArray[np.int64]:
    """Hash each character 3-5-gram of the first MAX_CHAR_NGRAM_CHARS to a column.

    The text is lower-cased, whitespace runs become one space and a space pads
    each end, so n-grams mark word starts and ends and may span two words.
    """
    words = text[:MAX_CHAR_NGRAM_CHARS].lower().split()
    padded = " " + " ".join(words) + " "
    codes = _codepoints(padded)
    hashes = []
    rolling = codes
    for size in range(2, max(CHAR_NGRAM_SIZES) + 1):
        rolling = rolling[:-1] * _ROLLING_BASE + codes[size - 1 :]
        if size in CHAR_NGRAM_SIZES:
            hashes.append(rolling)
    return _hash_columns(np.concatenate(hashes), CHAR_HASH_BITS)


class _StatelessTransformer(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Base of feature steps that learn nothing, so fitting is a no-op."""

    def fit(self, queries: Any, y: Any = None) -> _StatelessTransformer:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True


class _HashedBlock(_StatelessTransformer):
    """A block of hashed n-gram counts, L2-normalized per query."""

    n_features: int = 0

    def sparse_row(self, text: str) -> SparseRow:
        raise NotImplementedError

    def transform(self, queries: Iterable[str]) -> scipy.sparse.csr_matrix:
        rows = [self.sparse_row(query) for query in queries]
        if not rows:
            return scipy.sparse.csr_matrix((0, self.n_features), dtype=np.float64)
        indptr = np.cumsum([0] + [len(columns) for columns, _ in rows])
        columns = np.concatenate([columns for columns, _ in rows])
        values = np.concatenate([values for _, values in rows])
        return scipy.sparse.csr_matrix(
            (values, columns, indptr), shape=(len(rows), self.n_features)
        )


class WordNgramHasher(_HashedBlock):
    """Stateless step: word 1-2-grams (`word_ngram_columns`) in 2^15 columns."""

    n_features = WORD_HASH_FEATURES

    def sparse_row(self, text: str) -> SparseRow:
        return l2_normalized_counts(word_ngram_columns(text))


class CharNgramHasher(_HashedBlock):
    """Stateless step: character 3-5-grams (`char_ngram_columns`) in 2^15 columns."""

    n_features = CHAR_HASH_FEATURES

    def sparse_row(self, text: str) -> SparseRow:
        return l2_normalized_counts(char_ngram_columns(text))


class TruncateQueries(_StatelessTransformer):
    """Stateless pipeline step that applies `truncate_query` to every query."""

    def transform(self, queries: Iterable[str]) -> list[str]:
        return [truncate_query(query) for query in queries]


class TextStatistics(_StatelessTransformer):
    """Stateless pipeline step that maps each query to `text_statistics`."""

    _COLUMNS = np.arange(len(STATISTIC_NAMES), dtype=np.int64)

    def sparse_row(self, text: str) -> SparseRow:
        return self._COLUMNS, np.asarray(text_statistics(text), dtype=np.float64)

    def transform(self, queries: Iterable[str]) -> NDArray[np.float64]:
        rows = [text_statistics(query) for query in queries]
        return np.asarray(rows, dtype=np.float64).reshape(-1, len(STATISTIC_NAMES))

    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.str_]:
        return np.asarray(STATISTIC_NAMES, dtype=str)


def build_feature_union() -> Pipeline:
    """Build the text-to-features pipeline: truncation, then the three blocks.

    Hashing needs no vocabulary to fit or store, and the counts are non-negative, so
    chi-squared feature selection can follow. The statistics from `text_statistics`
    are appended as dense columns.
    """
    union = FeatureUnion(
        [
            ("words", WordNgramHasher()),
            ("chars", CharNgramHasher()),
            ("statistics", TextStatistics()),
        ]
    )
    return Pipeline([("truncate", TruncateQueries()), ("features", union)])


class ToDense(_StatelessTransformer):
    """Stateless pipeline step that turns a sparse matrix into a dense array.

    Tree ensembles such as HistGradientBoostingClassifier accept dense input only.
    """

    def transform(self, matrix: Any) -> NDArray[np.float64]:
        dense = matrix.toarray() if hasattr(matrix, "toarray") else matrix
        return np.asarray(dense, dtype=np.float64)
