"""Tests of per-request accounting through the router: ledger, limits, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.backends import Completion, CompletionRequest, build_backend
from router_service.bookkeeping import RequestAccounting
from router_service.domain import RouteQuery
from router_service.errors import ModelConnectionError
from router_service.ledger import CostLedger
from router_service.metrics import RouterMetrics
from router_service.quotas import RequestQuotas
from router_service.server import RunningServer, create_server
from router_service.settings import LimitSettings, ResilienceSettings, RouterSettings
from router_service.streaming import StreamingRouter
from router_service.testing import (
    TEST_PRICES,
    FakeCache,
    FakeClassifier,
    model_for_tests,
    settings_for_tests,
)

pytestmark = pytest.mark.anyio

QUERY = RouteQuery(query="What is the capital of France?", tenant="acme", user="u1")


def make_router(
    settings: RouterSettings | None = None, backends: dict | None = None
) -> tuple[StreamingRouter, CostLedger, RouterMetrics]:
    settings = settings or settings_for_tests()
    if backends is None:
        backends = {name: build_backend(m) for name, m in settings.models.items()}
    ledger = CostLedger(None)
    metrics = RouterMetrics()
    accounting = RequestAccounting(
        ledger, RequestQuotas(settings.limits, ledger), metrics
    )
    router = StreamingRouter(
        settings, backends, FakeCache(), accounting=accounting, metrics=metrics
    )
    router.attach_classifier(FakeClassifier())
    return router, ledger, metrics


def ledger_rows(ledger: CostLedger) -> list[tuple]:
    return ledger._connection.execute(
        "SELECT tenant, user, tier, model, cache_status, input_tokens, "
        "output_tokens, cost_usd FROM requests ORDER BY rowid"
    ).fetchall()


async def test_ledger_records_miss_and_free_hit() -> None:
    router, ledger, _ = make_router()
    miss = await router.route(QUERY)
    await router.route(QUERY)
    rows = ledger_rows(ledger)

    assert len(rows) == 2
    assert rows[0][:5] == ("acme", "u1", "simple", "simple-model", "miss")
    assert rows[0][7] == pytest.approx(miss.cost_usd)
    assert rows[1][4] == "exact_hit"
    assert rows[1][5:] == (0, 0, 0.0)
    savings = ledger.savings()
    assert savings.baseline_cost_usd == pytest.approx(2 * miss.baseline_cost_usd)


async def test_streamed_request_is_recorded() -> None:
    router, ledger, _ = make_router()
    events = [event async for event in router.route_stream(QUERY)]
    rows = ledger_rows(ledger)

    assert len(rows) == 1
    assert rows[0][6] == 8
    assert rows[0][7] == pytest.approx(events[-1].cost_usd)  # type: ignore[union-attr]


class FailsOnceBackend:
    """Fails the first call after the provider reported 40 input tokens."""

    name = "simple-model"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        self.calls += 1
        if self.calls == 1:
            raise ModelConnectionError(
                self.name, "reset by peer", reported_input_tokens=40
            )
        return Completion("Paris.", "stop", input_tokens=10, output_tokens=2)

    async def aclose(self) -> None:
        return None


async def test_retried_request_billed_once_plus_reported_tokens() -> None:
    settings = settings_for_tests()
    backends = {name: build_backend(m) for name, m in settings.models.items()}
    flaky = FailsOnceBackend()
    backends["simple-model"] = flaky  # type: ignore[assignment]
    router, ledger, _ = make_router(settings, backends)
    result = await router.route(QUERY)

    price_in, price_out = TEST_PRICES["simple"]
    assert flaky.calls == 2
    assert result.input_tokens == 10
    assert result.cost_usd == pytest.approx(
        ((10 + 40) * price_in + 2 * price_out) / 1000
    )
    assert len(ledger_rows(ledger)) == 1


async def test_breaker_state_is_exported_as_metric() -> None:
    models = {
        "broken": model_for_tests("broken", failure_rate=1.0),
        "spare": model_for_tests("spare"),
        "big": model_for_tests("big"),
    }
    settings = settings_for_tests(
        models=models,
        tiers={
            "simple": ("broken", "spare"),
            "medium": ("spare",),
            "complex": ("big",),
        },
        resilience=ResilienceSettings(
            max_attempts=1, breaker_failure_threshold=2, backoff_initial_s=0.001
        ),
    )
    router, _, metrics = make_router(settings)
    for index in range(3):
        await router.route(replace(QUERY, query=f"question {index}"))

    gauge = metrics.registry.get_sample_value(
        "querygate_router_breaker_state", {"model": "broken"}
    )
    assert gauge == 1.0
    assert router.breakers["broken"].state.name == "OPEN"
    served_by_spare = metrics.registry.get_sample_value(
        "querygate_router_requests_total",
        {"tier": "simple", "model": "spare", "cache_status": "miss"},
    )
    assert served_by_spare == 3.0


@pytest.fixture
async def limited_server() -> AsyncIterator[RunningServer]:
    settings = settings_for_tests(limits=LimitSettings(tenant_requests="2/minute"))
    running = await create_server(
        settings, cache=FakeCache(), classifier=FakeClassifier()
    )
    yield running
    await running.stop(grace_s=0.5)


async def test_rate_limit_is_resource_exhausted_with_retry_info(
    limited_server: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(limited_server.target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        request = router_pb2.RouteRequest(query="hello", tenant="acme")
        for _ in range(2):
            await stub.Route(request, timeout=10)
        call = stub.Route(request, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        trailing = await call.trailing_metadata()

    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry after" in (caught.value.details() or "")
    status = rpc_status.from_call(_CallView(caught.value, trailing))
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert 0 < retry.retry_delay.ToNanoseconds() <= 60 * 10**9


class _CallView:
    """Adapts an aio error to the interface `rpc_status.from_call` reads."""

    def __init__(self, error: grpc.aio.AioRpcError, trailing: object) -> None:
        self._error = error
        self._trailing = trailing

    def code(self) -> grpc.StatusCode:
        return self._error.code()

    def details(self) -> str | None:
        return self._error.details()

    def trailing_metadata(self) -> object:
        return self._trailing


async def test_metrics_endpoint_serves_router_metrics() -> None:
    import httpx

    settings = settings_for_tests(metrics_address="127.0.0.1:0")
    running = await create_server(
        settings, cache=FakeCache(), classifier=FakeClassifier()
    )
    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            await stub.Route(
                router_pb2.RouteRequest(query="hi", tenant="a"), timeout=10
            )
        port = running.metrics_http.server_address[1]
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        await running.stop(grace_s=0.5)

    assert response.status_code == 200
    assert "querygate_router_requests_total" in response.text
    assert "querygate_router_cost_usd_total" in response.text
