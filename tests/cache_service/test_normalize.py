"""Tests of the exact-layer text normalization."""

from __future__ import annotations

import pytest

from cache_service.normalize import normalize_query


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("What is DNS?", "what is dns", id="case-and-question-mark"),
        pytest.param("What  is\tDNS", "What is DNS", id="whitespace-runs"),
        pytest.param("  What is DNS  ", "What is DNS", id="outer-whitespace"),
        pytest.param(
            "\uff37\uff48\uff41\uff54 is \uff24\uff2e\uff33\uff1f",
            "what is dns",
            id="full-width-forms",
        ),
        pytest.param("Straße", "STRASSE", id="case-folding"),
        pytest.param("Really?!", "really", id="repeated-marks"),
        pytest.param("Explain DNS.", "explain dns", id="full-stop"),
    ],
)
def test_equivalent_texts_share_key(first: str, second: str) -> None:
    assert normalize_query(first) == normalize_query(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("What is C++", "What is C", id="plus-signs-kept"),
        pytest.param("Convert 5 km", "Convert 50 km", id="numbers"),
        pytest.param("Is x > 1;", "Is x > 1", id="semicolon-kept"),
        pytest.param("Why? Because", "Why Because", id="inner-marks-kept"),
    ],
)
def test_different_texts_keep_distinct_keys(first: str, second: str) -> None:
    assert normalize_query(first) != normalize_query(second)


def test_text_of_only_marks_keeps_nonempty_key() -> None:
    assert normalize_query(" ?? ") == "??"
