"""Domain values of the router: requests, results and the cache seam.

Nothing here imports grpc; the servicer converts protos to and from these.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cache_service.request_limits import (
    identifier_character_rule,
    query_violation,
    scope_violation,
)
from router_service.backends.base import ChatMessage
from router_service.errors import InvalidRequestError
from router_service.settings import TIERS, RouterSettings

AUTO_MODEL = "auto"


class CacheStatus(enum.StrEnum):
    """Outcome of the cache step of a request."""

    MISS = "miss"
    EXACT_HIT = "exact_hit"
    SEMANTIC_HIT = "semantic_hit"
    BYPASSED = "bypassed"
    UNAVAILABLE = "unavailable"
    # The cache missed, and a concurrent identical request's model call was reused.
    SHARED = "shared"


class FeedbackRating(enum.StrEnum):
    """A caller's verdict on an answer; a bad mark removes the cached answer."""

    GOOD = "good"
    BAD = "bad"


@dataclass(frozen=True)
class CacheScope:
    """Everything besides the query text that must match for a cache hit."""

    tenant: str
    model: str
    system_prompt: str = ""
    conversation: tuple[ChatMessage, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class CacheHit:
    """A stored answer that the cache returned; layer is "exact" or "semantic"."""

    layer: str
    similarity: float
    entry_id: str
    answer: str
    metadata: Mapping[str, str] = field(default_factory=dict)


class SemanticCache(Protocol):
    """Interface of the cache service that routing uses.

    Every method raises `CacheUnavailableError` when the service cannot be reached.
    """

    async def lookup(
        self, query: str, scope: CacheScope, min_similarity: float | None = None
    ) -> CacheHit | None: ...

    async def store(
        self,
        query: str,
        scope: CacheScope,
        answer: str,
        metadata: Mapping[str, str],
        finish_reason: str,
    ) -> str | None: ...

    async def feedback(
        self, entry_id: str, tenant: str, rating: FeedbackRating
    ) -> bool:
        """Mark an entry of `tenant`; return True when a bad mark removed it.

        Raises:
            NotFoundError: no entry with this id belongs to `tenant`.
            InvalidRequestError: the cache rejected the entry id.
        """
        ...


@dataclass(frozen=True)
class RouteQuery:
    """One request to answer a query; `tier` None lets the classifier choose."""

    query: str
    tenant: str
    user: str = ""
    system_prompt: str = ""
    conversation: tuple[ChatMessage, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    tier: str | None = None
    skip_cache: bool = False

    def cache_scope(self) -> CacheScope:
        """Return the scope that keys this request's cache entries."""
        return CacheScope(
            tenant=self.tenant,
            model=self.tier or AUTO_MODEL,
            system_prompt=self.system_prompt,
            conversation=self.conversation,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )

    def messages(self) -> tuple[ChatMessage, ...]:
        """Return the chat sent to a model: system prompt, earlier turns, query."""
        system = (
            (ChatMessage("system", self.system_prompt),) if self.system_prompt else ()
        )
        return (*system, *self.conversation, ChatMessage("user", self.query))


@dataclass(frozen=True)
class RouteResult:
    """The answer to a `RouteQuery`, with accounting."""

    answer: str
    tier: str
    model: str
    cache_status: CacheStatus
    similarity: float
    input_tokens: int
    output_tokens: int
    cost_usd: float
    baseline_cost_usd: float
    latency_ms: float
    request_id: str
    finish_reason: str
    cache_entry_id: str = ""
    degraded: bool = False


def validate_query(query: RouteQuery, settings: RouterSettings) -> None:
    """Check every field of a request against the configured limits.

    Raises:
        InvalidRequestError: naming the first invalid field.
    """
    check_query_text(query.query, settings.max_query_chars)
    check_tenant(query.tenant, settings.max_tenant_chars)
    if query.user:
        check_tenant(query.user, settings.max_tenant_chars, field="user")
    if query.tier is not None and query.tier not in TIERS:
        raise InvalidRequestError(
            "tier",
            f"must be one of {', '.join(TIERS)}; got {query.tier!r}",
            "Leave it unspecified to let the classifier choose.",
        )
    violation = scope_violation(
        query.system_prompt,
        query.conversation,
        query.temperature,
        query.max_tokens,
        settings.scope_limits(),
    )
    if violation is not None:
        raise InvalidRequestError(violation.field, violation.rule, violation.fix)


def check_query_text(text: str, max_chars: int) -> None:
    """Raise InvalidRequestError when ``text`` is not a query Route would accept."""
    # The cache applies the same rules, so it never rejects a query sent from here.
    violation = query_violation(text, max_chars)
    if violation is not None:
        raise InvalidRequestError(violation.field, violation.rule, violation.fix)


def check_tenant(tenant: str, max_chars: int, field: str = "tenant") -> None:
    """Raise InvalidRequestError unless the id is non-empty, short and printable.

    Control and format characters are rejected because ids are written to the
    logs, where a newline could forge a log line.
    """
    if not tenant.strip():
        raise InvalidRequestError(
            field,
            "is required",
            f"Set {field} to your team or application id.",
        )
    if len(tenant) > max_chars:
        raise InvalidRequestError(
            field,
            f"must be at most {max_chars} characters; got {len(tenant)} characters",
            "Use a short id such as acme-search.",
        )
    rule = identifier_character_rule(tenant)
    if rule is not None:
        raise InvalidRequestError(field, rule, "Use a short id such as acme-search.")
