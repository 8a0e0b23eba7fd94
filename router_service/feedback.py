"""Feedback on answers: find the cache entry a caller names and mark it.

A caller names the answer by the `request_id` or the `cache_entry_id` of its
RouteResponse. A request id is resolved through the cost ledger, so it works
only on routers that share the ledger file with the router that served it.
A tenant can only mark its own answers: the ledger lookup is filtered by
tenant, and the cache checks the entry's tenant again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from router_service.domain import FeedbackRating, SemanticCache, check_tenant
from router_service.errors import InvalidRequestError, NotFoundError
from router_service.metrics import RouterMetrics

# Request ids are 16 hex digits and cache entry ids are decimal; anything much
# longer is not an id that this router returned.
MAX_ID_CHARS = 64


@dataclass(frozen=True)
class FeedbackMark:
    """A verdict on one answer, named by exactly one of the two ids."""

    tenant: str
    rating: FeedbackRating | None
    request_id: str = ""
    cache_entry_id: str = ""


@dataclass(frozen=True)
class FeedbackResult:
    """The entry that was marked, and whether a bad mark removed it."""

    cache_entry_id: str
    removed: bool


class RequestLookup(Protocol):
    """The part of the cost ledger that resolves a request id to its entry."""

    def cache_entry_id(self, request_id: str, tenant: str) -> str | None: ...


class AnswerFeedback:
    """Resolves feedback marks to cache entries and applies them in the cache."""

    def __init__(
        self,
        cache: SemanticCache,
        requests: RequestLookup | None,
        metrics: RouterMetrics | None,
        max_tenant_chars: int,
    ) -> None:
        self._cache = cache
        self._requests = requests
        self._metrics = metrics
        self._max_tenant_chars = max_tenant_chars

    async def mark(self, mark: FeedbackMark) -> FeedbackResult:
        """Apply a mark to the answer it names.

        Raises:
            InvalidRequestError: the tenant, rating or id is missing or invalid.
            NotFoundError: the id names no answer of this tenant, or the answer
                was not cached.
            CacheUnavailableError: the cache service did not respond.
        """
        rating = _validate(mark, self._max_tenant_chars)
        entry_id = mark.cache_entry_id or await self._entry_of_request(mark)
        removed = await self._cache.feedback(entry_id, mark.tenant, rating)
        if self._metrics is not None:
            self._metrics.feedback.labels(str(rating)).inc()
        return FeedbackResult(cache_entry_id=entry_id, removed=removed)

    async def _entry_of_request(self, mark: FeedbackMark) -> str:
        entry_id = None
        if self._requests is not None:
            # SQLite reads can wait on a writer's lock, so they run off the loop.
            entry_id = await asyncio.to_thread(
                self._requests.cache_entry_id, mark.request_id, mark.tenant
            )
        if entry_id is None:
            raise NotFoundError(
                f"request_id {mark.request_id!r} not found for tenant "
                f"{mark.tenant!r} in this router's cost ledger. Send the "
                "cache_entry_id of the RouteResponse instead."
            )
        if not entry_id:
            raise NotFoundError(
                f"request_id {mark.request_id!r} has no cache entry: its answer "
                "was not cached (skip_cache, cut off by max_tokens, or the cache "
                "was unavailable), so there is nothing to mark."
            )
        return entry_id


def _validate(mark: FeedbackMark, max_tenant_chars: int) -> FeedbackRating:
    """Return the mark's rating once every field of the mark is valid."""
    check_tenant(mark.tenant, max_tenant_chars)
    if mark.rating is None:
        raise InvalidRequestError(
            "rating",
            "must be FEEDBACK_RATING_GOOD or FEEDBACK_RATING_BAD",
            "Set it to the caller's verdict on the answer.",
        )
    if bool(mark.request_id) == bool(mark.cache_entry_id):
        raise InvalidRequestError(
            "target",
            "must name the answer by exactly one of request_id or cache_entry_id",
            "Copy one of them from the RouteResponse.",
        )
    for field, value in (
        ("request_id", mark.request_id),
        ("cache_entry_id", mark.cache_entry_id),
    ):
        if len(value) > MAX_ID_CHARS or value != value.strip():
            raise InvalidRequestError(
                field,
                f"must be at most {MAX_ID_CHARS} characters with no surrounding "
                f"spaces; got {len(value)} characters",
                "Copy the id unchanged from the RouteResponse.",
            )
    return mark.rating
