"""Text normalization for the exact layer: which query texts count as the same."""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
# Sentence-final marks that do not change what a query asks: "What is DNS?" and
# "what is dns" want the same answer. Other trailing characters ("C++", "5%",
# "x > 1;") can carry meaning and are kept.
_TRAILING_MARKS = "?!.\u3002"


def normalize_query(text: str) -> str:
    """Return the exact-layer key text of ``text``.

    The steps are Unicode NFKC (full-width and compatibility forms become their
    plain forms), case folding, whitespace runs collapsed to one space, and
    sentence-final question marks, exclamation marks and full stops (Latin and
    ideographic) stripped, including repeats such as "?!". A text made only of
    those marks keeps them, so its key is not empty.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _WHITESPACE.sub(" ", text).strip()
    stripped = text.rstrip(_TRAILING_MARKS).rstrip()
    return stripped or text
