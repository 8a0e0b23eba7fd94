"""Features of a query pair that the embedding tends to miss, for the false-hit guard.

The guard (serving) and ``training.guard_verifier`` (training) both import this
module, so the features a verifier was trained on are the features it is served
with. ``FEATURE_VERSION`` changes whenever a feature changes meaning, and a verifier
artifact built with another version is rejected at load.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

FEATURE_VERSION = 2

_TOKEN = re.compile(r"\d+(?:[.,:/]\d+)*|[^\W\d_]+(?:'[^\W\d_]+)?")
# Capitalized words after the first token are taken as names. Crude, but it needs
# no model and catches "Paris" vs "Lyon" in otherwise identical questions.
_NAME = re.compile(r"(?<=[\s(\"'])[A-Z][\w.-]*")
# Capitalized words that are not names: the pronoun "I", function words that open a
# second sentence ("... abroad. How do I ..."), greetings, and the small words of a
# query typed in capitals. "US", "IT" and "May" are left out because they are also
# a country, a field and a month.
_NOT_NAMES_TEXT = """
    i me my mine you your yours he him his she her hers its we our they them
    their this that these those who whom whose what which when where why how
    a an the and or but if then so because as of to in on at by for from with into
    about over under is am are was were be been being do does did done have has had
    can could will would shall should might must not no yes also any some all
    each every many much more most other such only just there here please thanks
    thank cheers hi hello hey ok okay
"""
_NOT_NAMES = frozenset(_NOT_NAMES_TEXT.split())
_BOTH_SIDES = re.compile(r"\b(?:or|why) not\b")
_NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "twenty": "20",
    "fifty": "50",
    "hundred": "100",
}
_NEGATIONS = frozenset(
    {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without"}
)
# Words that turn a request into its opposite. Each pair is unordered.
_OPPOSITES = frozenset(
    frozenset(pair)
    for pair in (
        ("on", "off"),
        ("enable", "disable"),
        ("open", "close"),
        ("open", "closed"),
        ("lock", "unlock"),
        ("start", "stop"),
        ("add", "remove"),
        ("buy", "sell"),
        ("increase", "decrease"),
        ("before", "after"),
        ("benefits", "drawbacks"),
        ("advantages", "disadvantages"),
        ("pros", "cons"),
        ("best", "worst"),
        ("eat", "avoid"),
        ("allowed", "forbidden"),
        ("legal", "illegal"),
        ("upgrade", "downgrade"),
        ("import", "export"),
        ("install", "uninstall"),
        ("subscribe", "unsubscribe"),
        ("encrypt", "decrypt"),
        ("max", "min"),
        ("maximum", "minimum"),
        ("highest", "lowest"),
        ("fastest", "slowest"),
        ("first", "last"),
        ("in", "out"),
        ("up", "down"),
        ("hot", "cold"),
        ("gain", "lose"),
        ("win", "lose"),
        ("accept", "reject"),
        ("include", "exclude"),
        ("above", "below"),
        ("more", "less"),
        ("true", "false"),
        ("yes", "no"),
        ("arrive", "depart"),
        ("arrival", "departure"),
        ("inbound", "outbound"),
        ("send", "receive"),
        ("deposit", "withdraw"),
        ("debit", "credit"),
    )
)
_REVERSING_PREFIXES = ("un", "dis", "de", "in", "im", "non")
# Left out when word order is compared: the articles, and "one" (which tokenize
# writes as "1"), so "in a pound" and "in one pound" read alike.
_ARTICLES = frozenset({"a", "an", "the", "1"})
_ES_PLURALS = ("s", "x", "ch", "sh")

FEATURE_NAMES = (
    "cosine",
    "token_jaccard",
    "bigram_jaccard",
    "order_discordance",
    "same_words_reordered",
    "number_mismatch",
    "number_one_side",
    "negation_mismatch",
    "opposite_words",
    "name_mismatch",
    "max_unshared_fraction",
    "min_unshared_fraction",
    "length_ratio",
)


@dataclass(frozen=True)
class QueryTokens:
    """The parts of one query that the features compare."""

    words: tuple[str, ...]
    numbers: tuple[str, ...]
    negations: int
    names: frozenset[str]


def tokenize(text: str) -> QueryTokens:
    """Split ``text`` into lower-case words, numbers, a negation count and names."""
    plain = unicodedata.normalize("NFKC", text).replace("\u2019", "'")
    names = frozenset(
        name
        for name in (match.casefold().strip(".-") for match in _NAME.findall(plain))
        if name not in _NOT_NAMES
    )
    words: list[str] = []
    numbers: list[str] = []
    negations = 0
    # "Why or why not?" and "... or not?" ask for both sides, not for a negation.
    negations -= len(_BOTH_SIDES.findall(plain.casefold()))
    for raw in _TOKEN.findall(plain.casefold()):
        word = _NUMBER_WORDS.get(raw, raw)
        if word.endswith("n't"):
            negations += 1
            word = word[:-3]
        elif word in _NEGATIONS:
            negations += 1
        if word[0].isdigit():
            numbers.append(word.replace(",", ""))
        words.append(word)
    return QueryTokens(tuple(words), tuple(sorted(numbers)), negations, names)


def pair_features(
    cosine: float, first: QueryTokens, second: QueryTokens
) -> list[float]:
    """Return the features named in ``FEATURE_NAMES`` for one pair, in that order."""
    first_set, second_set = set(first.words), set(second.words)
    union = first_set | second_set
    shared = first_set & second_set
    token_jaccard = len(shared) / len(union) if union else 1.0
    first_bigrams = set(zip(first.words, first.words[1:], strict=False))
    second_bigrams = set(zip(second.words, second.words[1:], strict=False))
    bigram_union = first_bigrams | second_bigrams
    bigram_jaccard = (
        len(first_bigrams & second_bigrams) / len(bigram_union) if bigram_union else 1.0
    )
    discordance = _order_discordance(first.words, second.words, shared)
    same_words = Counter(first.words) == Counter(second.words)
    return [
        cosine,
        token_jaccard,
        bigram_jaccard,
        discordance,
        float(same_words and first.words != second.words),
        float(
            bool(first.numbers)
            and bool(second.numbers)
            and _numbers_differ(first, second)
        ),
        float(bool(first.numbers) != bool(second.numbers)),
        float(first.negations != second.negations),
        float(_has_opposites(first_set - second_set, second_set - first_set)),
        float(_names_missing(first, second_set) or _names_missing(second, first_set)),
        max(_unshared(first_set, shared), _unshared(second_set, shared)),
        min(_unshared(first_set, shared), _unshared(second_set, shared)),
        min(len(first.words), len(second.words))
        / max(len(first.words), len(second.words), 1),
    ]


def words_reordered(first: QueryTokens, second: QueryTokens) -> bool:
    """Return True when the two queries use the same words in another order.

    Articles and "one" are left out and a plural "s" or "es" is dropped before the
    words are compared, so "How many ounces in a pound?" and "How many pounds in
    one ounce?" count as reordered. Swapping two such words swaps roles, units or direction.
    """
    first_stems = _stems(first.words)
    second_stems = _stems(second.words)
    return first_stems != second_stems and Counter(first_stems) == Counter(second_stems)


def _stems(words: tuple[str, ...]) -> list[str]:
    return [_singular(word) for word in words if word not in _ARTICLES]


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("es") and word[:-2].endswith(_ES_PLURALS):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _numbers_differ(first: QueryTokens, second: QueryTokens) -> bool:
    return first.numbers != second.numbers


def _unshared(words: set[str], shared: set[str]) -> float:
    return 1.0 - len(shared) / len(words) if words else 0.0


def _names_missing(query: QueryTokens, other_words: set[str]) -> bool:
    """Return True when a name in ``query`` has no word of the other query."""
    return any(not set(_TOKEN.findall(name)) <= other_words for name in query.names)


def _has_opposites(only_first: set[str], only_second: set[str]) -> bool:
    for word in only_first:
        for other in only_second:
            if frozenset((word, other)) in _OPPOSITES:
                return True
            longer, shorter = (word, other) if len(word) > len(other) else (other, word)
            # Short stems give false pairs such as "to" and "into".
            if len(shorter) >= 4 and any(
                longer == prefix + shorter for prefix in _REVERSING_PREFIXES
            ):
                return True
    return False


def _order_discordance(
    first: tuple[str, ...], second: tuple[str, ...], shared: set[str]
) -> float:
    """Return the fraction of shared-word pairs whose order differs (Kendall tau)."""
    first_position = {word: i for i, word in reversed(list(enumerate(first)))}
    second_position = {word: i for i, word in reversed(list(enumerate(second)))}
    ranks = [
        second_position[word]
        for word in sorted(shared, key=lambda word: first_position[word])
    ]
    pairs = len(ranks) * (len(ranks) - 1) // 2
    if pairs == 0:
        return 0.0
    swapped = sum(
        1
        for i in range(len(ranks))
        for j in range(i + 1, len(ranks))
        if ranks[i] > ranks[j]
    )
    return swapped / pairs
