"""Feedback in the routing domain: fake cache, real SQLite ledger, real metrics."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from router_service.backends import build_backend
from router_service.bookkeeping import RequestAccounting
from router_service.domain import CacheStatus, FeedbackRating, RouteQuery
from router_service.errors import (
    CacheUnavailableError,
    InvalidRequestError,
    NotFoundError,
)
from router_service.feedback import AnswerFeedback, FeedbackMark
from router_service.ledger import CostLedger
from router_service.metrics import RouterMetrics
from router_service.routing import Router
from router_service.testing import FakeCache, FakeClassifier, settings_for_tests

pytestmark = pytest.mark.anyio

BAD = FeedbackRating.BAD
GOOD = FeedbackRating.GOOD


class Stack:
    """A router and its feedback handler sharing one fake cache and ledger."""

    def __init__(self, ledger_path: Path | None = None) -> None:
        settings = settings_for_tests()
        self.cache = FakeCache()
        self.ledger = CostLedger(ledger_path)
        self.metrics = RouterMetrics()
        backends = {name: build_backend(m) for name, m in settings.models.items()}
        self.router = Router(
            settings,
            backends,
            self.cache,
            accounting=RequestAccounting(self.ledger, None, self.metrics),
        )
        self.router.attach_classifier(FakeClassifier())
        self.feedback = AnswerFeedback(
            self.cache, self.ledger, self.metrics, settings.max_tenant_chars
        )

    def marks(self, rating: FeedbackRating) -> float:
        value = self.metrics.registry.get_sample_value(
            "querygate_router_feedback_total", {"rating": str(rating)}
        )
        assert value is not None
        return value


def ask(tenant: str = "acme", **fields: object) -> RouteQuery:
    return RouteQuery(query="What is DNS?", tenant=tenant, **fields)  # type: ignore[arg-type]


async def test_bad_mark_by_request_id_removes_answer() -> None:
    stack = Stack()
    first = await stack.router.route(ask())

    result = await stack.feedback.mark(
        FeedbackMark(tenant="acme", rating=BAD, request_id=first.request_id)
    )
    again = await stack.router.route(ask())

    assert result.cache_entry_id == first.cache_entry_id
    assert result.removed
    assert again.cache_status is CacheStatus.MISS
    assert again.cache_entry_id != first.cache_entry_id
    assert stack.marks(BAD) == 1
    assert stack.marks(GOOD) == 0


async def test_good_mark_by_entry_id_keeps_answer() -> None:
    stack = Stack()
    first = await stack.router.route(ask())

    result = await stack.feedback.mark(
        FeedbackMark(tenant="acme", rating=GOOD, cache_entry_id=first.cache_entry_id)
    )
    again = await stack.router.route(ask())

    assert not result.removed
    assert again.cache_status is CacheStatus.EXACT_HIT
    assert stack.marks(GOOD) == 1


async def test_request_id_of_hit_names_served_entry() -> None:
    stack = Stack()
    first = await stack.router.route(ask())
    hit = await stack.router.route(ask())

    result = await stack.feedback.mark(
        FeedbackMark(tenant="acme", rating=BAD, request_id=hit.request_id)
    )

    assert hit.cache_status is CacheStatus.EXACT_HIT
    assert result.cache_entry_id == first.cache_entry_id
    assert result.removed


async def test_other_tenant_request_id_is_not_found() -> None:
    stack = Stack()
    first = await stack.router.route(ask(tenant="acme"))

    with pytest.raises(NotFoundError, match="not found for tenant 'globex'"):
        await stack.feedback.mark(
            FeedbackMark(tenant="globex", rating=BAD, request_id=first.request_id)
        )

    again = await stack.router.route(ask(tenant="acme"))
    assert again.cache_status is CacheStatus.EXACT_HIT
    assert stack.cache.marks == []
    assert stack.marks(BAD) == 0


async def test_other_tenant_entry_id_is_not_found() -> None:
    stack = Stack()
    first = await stack.router.route(ask(tenant="acme"))

    with pytest.raises(NotFoundError):
        await stack.feedback.mark(
            FeedbackMark(
                tenant="globex", rating=BAD, cache_entry_id=first.cache_entry_id
            )
        )

    again = await stack.router.route(ask(tenant="acme"))
    assert again.cache_status is CacheStatus.EXACT_HIT


async def test_uncached_request_has_nothing_to_mark() -> None:
    stack = Stack()
    bypassed = await stack.router.route(ask(skip_cache=True))

    with pytest.raises(NotFoundError, match="has no cache entry"):
        await stack.feedback.mark(
            FeedbackMark(tenant="acme", rating=BAD, request_id=bypassed.request_id)
        )


async def test_unknown_request_id_is_not_found() -> None:
    stack = Stack()

    with pytest.raises(NotFoundError, match="request_id 'feedfacefeedface'"):
        await stack.feedback.mark(
            FeedbackMark(tenant="acme", rating=BAD, request_id="feedfacefeedface")
        )


async def test_unavailable_cache_propagates() -> None:
    stack = Stack()
    first = await stack.router.route(ask())
    stack.cache.available = False

    with pytest.raises(CacheUnavailableError):
        await stack.feedback.mark(
            FeedbackMark(tenant="acme", rating=BAD, request_id=first.request_id)
        )

    assert stack.marks(BAD) == 0


@pytest.mark.parametrize(
    ("mark", "message"),
    [
        pytest.param(
            FeedbackMark(tenant="acme", rating=None, cache_entry_id="1"),
            "rating: must be FEEDBACK_RATING_GOOD or FEEDBACK_RATING_BAD",
            id="no-rating",
        ),
        pytest.param(
            FeedbackMark(tenant="acme", rating=BAD),
            "target: must name the answer by exactly one",
            id="no-id",
        ),
        pytest.param(
            FeedbackMark(tenant="acme", rating=BAD, request_id="a", cache_entry_id="1"),
            "target: must name the answer by exactly one",
            id="both-ids",
        ),
        pytest.param(
            FeedbackMark(tenant="", rating=BAD, cache_entry_id="1"),
            "tenant: is required",
            id="no-tenant",
        ),
        pytest.param(
            FeedbackMark(tenant="acme", rating=BAD, request_id="r" * 65),
            "request_id: must be at most 64 characters",
            id="long-request-id",
        ),
        pytest.param(
            FeedbackMark(tenant="acme", rating=BAD, cache_entry_id=" 1"),
            "cache_entry_id: must be at most 64 characters with no surrounding",
            id="padded-entry-id",
        ),
    ],
)
async def test_invalid_mark_names_field(mark: FeedbackMark, message: str) -> None:
    stack = Stack()

    with pytest.raises(InvalidRequestError, match=message):
        await stack.feedback.mark(mark)

    assert stack.cache.marks == []


async def test_ledger_without_entry_column_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as connection:
        # The requests table as routers wrote it before feedback existed.
        connection.execute(
            "CREATE TABLE requests (created_at REAL NOT NULL, request_id TEXT NOT "
            "NULL, tenant TEXT NOT NULL, user TEXT NOT NULL, tier TEXT NOT NULL, "
            "model TEXT NOT NULL, cache_status TEXT NOT NULL, degraded INTEGER NOT "
            "NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, "
            "cost_usd REAL NOT NULL, baseline_cost_usd REAL NOT NULL, "
            "latency_ms REAL NOT NULL)"
        )
        connection.execute(
            "INSERT INTO requests VALUES (1.0, 'old', 'acme', 'u', 'simple', 'm', "
            "'miss', 0, 1, 1, 0.1, 0.2, 3.0)"
        )
    connection.close()

    stack = Stack(ledger_path=path)
    first = await stack.router.route(ask())

    assert stack.ledger.cache_entry_id("old", "acme") == ""
    assert stack.ledger.cache_entry_id(first.request_id, "acme") == (
        first.cache_entry_id
    )
    assert stack.ledger.savings("acme").requests == 2
    stack.ledger.close()
