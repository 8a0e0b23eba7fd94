"""Tests of the scope key: equal exactly when every scope field is equal."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cache_service.scope import ChatTurn, Scope

BASE = Scope(
    tenant="acme",
    model="auto",
    system_prompt="You are terse.",
    conversation=(ChatTurn("user", "Show a loop in Go"), ChatTurn("assistant", "...")),
    temperature=0.0,
    max_tokens=256,
)


def test_equal_scopes_share_key() -> None:
    assert replace(BASE).key() == BASE.key()


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(replace(BASE, tenant="globex"), id="tenant"),
        pytest.param(replace(BASE, model="complex"), id="model"),
        pytest.param(replace(BASE, system_prompt="You are verbose."), id="system"),
        pytest.param(replace(BASE, conversation=()), id="no-conversation"),
        pytest.param(
            replace(BASE, conversation=(ChatTurn("user", "Show a loop in Rust"),)),
            id="other-conversation",
        ),
        pytest.param(replace(BASE, temperature=0.7), id="temperature"),
        pytest.param(replace(BASE, temperature=None), id="temperature-unset"),
        pytest.param(replace(BASE, max_tokens=512), id="max-tokens"),
    ],
)
def test_any_changed_field_changes_key(changed: Scope) -> None:
    assert changed.key() != BASE.key()


def test_field_boundaries_cannot_be_forged() -> None:
    # Concatenation would make these equal; the key encodes fields separately.
    first = Scope(tenant="a", model="b|c")
    second = Scope(tenant="a|b", model="c")
    assert first.key() != second.key()
