"""Tests of the scope rules that the cache and the router share."""

from __future__ import annotations

import math

import pytest

from cache_service.request_limits import ScopeLimits, Violation, scope_violation
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
    ],
)
def test_scope_violation_names_field_and_limit(
    fields: dict[str, object], field: str, rule: str
) -> None:
    violation = _violation(**fields)

    assert violation is not None
    assert violation.field == field
    assert rule in violation.rule
