"""Tests of the scope rules that the cache and the router share."""

from __future__ import annotations

import math

import pytest

from cache_service.request_limits import (
    ScopeLimits,
    Violation,
    identifier_character_rule,
    query_violation,
    scope_violation,
)
from cache_service.scope import ChatTurn

LIMITS = ScopeLimits(
    max_system_prompt_chars=10,
    max_conversation_turns=3,
    max_conversation_chars=20,
    max_output_tokens=100,
)


def _violation(**overrides: object) -> Violation | None:
    values: dict[str, object] = {
        "system_prompt": "",
        "conversation": (),
        "temperature": None,
        "max_tokens": None,
    }
    values.update(overrides)
    return scope_violation(limits=LIMITS, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="empty"),
        pytest.param({"temperature": 0.0}, id="temperature-zero"),
        pytest.param({"temperature": 2.0}, id="temperature-two"),
        pytest.param({"max_tokens": 1}, id="max-tokens-one"),
        pytest.param({"max_tokens": 100}, id="max-tokens-limit"),
        pytest.param({"system_prompt": "s" * 10}, id="system-prompt-limit"),
        pytest.param({"system_prompt": "Hi\tyou\r\n"}, id="system-prompt-tab"),
        pytest.param(
            {"conversation": (ChatTurn("user", "a" * 10), ChatTurn("assistant", "b"))},
            id="conversation",
        ),
    ],
)
def test_scope_within_limits_passes(fields: dict[str, object]) -> None:
    assert _violation(**fields) is None


@pytest.mark.parametrize(
    ("fields", "field", "rule"),
    [
        pytest.param(
            {"temperature": -0.1}, "temperature", "between 0 and 2", id="negative"
        ),
        pytest.param(
            {"temperature": 2.01}, "temperature", "between 0 and 2", id="above-two"
        ),
        pytest.param(
            {"temperature": math.nan}, "temperature", "between 0 and 2", id="nan"
        ),
        pytest.param(
            {"temperature": math.inf}, "temperature", "between 0 and 2", id="inf"
        ),
        pytest.param({"max_tokens": 0}, "max_tokens", "between 1 and 100", id="zero"),
        pytest.param(
            {"max_tokens": 101}, "max_tokens", "between 1 and 100", id="above"
        ),
        pytest.param(
            {"system_prompt": "s" * 11},
            "system_prompt",
            "at most 10 characters (max_system_prompt_chars); got 11",
            id="system-prompt",
        ),
        pytest.param(
            {"conversation": (ChatTurn("user", "a"),) * 4},
            "conversation",
            "at most 3 turns (max_conversation_turns); got 4",
            id="turns",
        ),
        pytest.param(
            {"conversation": (ChatTurn("user", "a" * 15), ChatTurn("user", "b" * 6))},
            "conversation",
            "at most 20 characters of content (max_conversation_chars); got 21",
            id="conversation-chars",
        ),
        pytest.param(
            {"conversation": (ChatTurn("user", "a"), ChatTurn("tool", "b"))},
            "conversation[1].role",
            "must be user or assistant; got 'tool'",
            id="role",
        ),
        pytest.param(
            {"system_prompt": "be\x00nice"},
            "system_prompt",
            "got U+0000 at position 2",
            id="system-prompt-control",
        ),
        pytest.param(
            {"conversation": (ChatTurn("user", "a"), ChatTurn("assistant", "\x1b[2J"))},
            "conversation[1].content",
            "got U+001B at position 0",
            id="turn-control",
        ),
    ],
)
def test_scope_violation_names_field_and_limit(
    fields: dict[str, object], field: str, rule: str
) -> None:
    violation = _violation(**fields)

    assert violation is not None
    assert violation.field == field
    assert rule in violation.rule


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("hi", id="plain"),
        pytest.param("a\tb\r\nc", id="tab-newline-return"),
        pytest.param("zero\u200bwidth", id="format-inside"),
        pytest.param("\u05e9\u05dc\u05d5\u05dd\u200f", id="right-to-left-mark"),
        pytest.param("\U0001f44d\U0001f3fd", id="emoji"),
    ],
)
def test_query_with_visible_text_passes(text: str) -> None:
    assert query_violation(text, max_chars=20) is None


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        pytest.param("", "must contain a visible character", id="empty"),
        pytest.param("\x00", "must contain a visible character", id="nul"),
        pytest.param("\u200b\ufeff", "must contain a visible character", id="format"),
        pytest.param("\x85 \u2028", "must contain a visible character", id="c1-space"),
        pytest.param("x" * 21, "at most 20 characters; got 21", id="too-long"),
        pytest.param("hi\x00", "got U+0000 at position 2", id="nul-inside"),
        pytest.param("\x7fhi", "got U+007F at position 0", id="delete"),
        pytest.param("h\x9bi", "got U+009B at position 1", id="c1-control"),
    ],
)
def test_query_violation_names_rule(text: str, rule: str) -> None:
    violation = query_violation(text, max_chars=20, field="query.query")

    assert violation is not None
    assert violation.field == "query.query"
    assert rule in violation.rule


@pytest.mark.parametrize(
    ("value", "position"),
    [
        pytest.param("a b", "U+0020 at position 1", id="space"),
        pytest.param("ab\n", "U+000A at position 2", id="newline"),
        pytest.param("\u202eab", "U+202E at position 0", id="bidi-override"),
    ],
)
def test_identifier_rejects_unprintable_character(value: str, position: str) -> None:
    rule = identifier_character_rule(value)

    assert rule is not None
    assert rule.endswith(position)


def test_identifier_accepts_printable_id() -> None:
    assert identifier_character_rule("acme-search/v2.1") is None


def test_c1_control_names_likely_encoding_error() -> None:
    violation = query_violation("It\x92s here", max_chars=20)

    assert violation is not None
    assert "got U+0092 at position 2" in violation.rule
    assert "decoded with the wrong encoding" in violation.fix
