"""The scope of a cache entry: everything besides the query text that must match."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class ChatTurn:
    """One earlier message of the conversation that a query belongs to."""

    role: str
    content: str


@dataclass(frozen=True)
class Scope:
    """Tenant, model and generation context of a query.

    Two queries can share an answer only when their scopes are equal field by field.
    The system prompt and the conversation are compared exactly and never embedded,
    so a long shared system prompt cannot make different questions look alike.
    """

    tenant: str
    model: str = ""
    system_prompt: str = ""
    conversation: tuple[ChatTurn, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None

    def key(self) -> str:
        """Return a SHA-256 hex digest that is equal exactly when the scopes are."""
        canonical = json.dumps(
            [
                self.tenant,
                self.model,
                self.system_prompt,
                [[turn.role, turn.content] for turn in self.conversation],
                self.temperature,
                self.max_tokens,
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
