"""Router metrics and per-RPC log lines, read from a real server on port 0.

Each test sends real gRPC requests, then scrapes the real /metrics endpoint over
HTTP, so a metric counts only if the wiring from servicer to registry works.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_scrape import Scrape, scrape
from querygate.router.v1 import router_pb2, router_pb2_grpc

from cache_service.rpc_log import MAX_LOGGED_ID_CHARS
from router_service.backends import Completion, CompletionRequest, build_backend
from router_service.metrics import RecentlySeen, RouterMetrics
from router_service.server import RunningServer, create_server
from router_service.settings import LimitSettings, ResilienceSettings, RouterSettings
from router_service.testing import (
    FakeCache,
    FakeClassifier,
    model_for_tests,
    settings_for_tests,
)

pytestmark = pytest.mark.anyio

QUESTION = "What is the capital of France?"


def flaky_settings(**overrides: object) -> RouterSettings:
    """Simple tier: "flaky" (always a simulated 503), then "spare"."""
    models = {
        "flaky": model_for_tests("flaky", failure_rate=1.0),
        "spare": model_for_tests("spare"),
        "big": model_for_tests("big"),
    }
    return settings_for_tests(
        models=models,
        tiers={"simple": ("flaky", "spare"), "medium": ("spare",), "complex": ("big",)},
        resilience=ResilienceSettings(
            max_attempts=3,
            backoff_initial_s=0.001,
            backoff_max_s=0.01,
            breaker_failure_threshold=3,
        ),
        metrics_address="127.0.0.1:0",
        **overrides,
    )


@dataclass
class Router:
    running: RunningServer
    stub: router_pb2_grpc.RouterServiceStub

    def scrape(self) -> Scrape:
        return scrape(self.running.metrics_http.server_address[1])


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    running = await create_server(
        flaky_settings(), cache=FakeCache(), classifier=FakeClassifier()
    )
    async with grpc.aio.insecure_channel(running.target) as channel:
        yield Router(running, router_pb2_grpc.RouterServiceStub(channel))
    await running.stop(grace_s=0.5)


async def rpc_finished(
    metrics: RouterMetrics, method: str, code: str, count: int = 1
) -> None:
    """Wait until the interceptor has counted `count` RPCs of `method` and `code`.

    grpc.aio sends an aborted RPC's status before the servicer's coroutine ends,
    so the client can see the error before the interceptor logs and counts it.
    """
    labels = {"method": method, "code": code}
    for _ in range(500):
        value = metrics.registry.get_sample_value("querygate_router_rpcs_total", labels)
        if value == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {code} {method} RPC counted; got {value}")


def route_request(query: str = QUESTION, **fields: object) -> router_pb2.RouteRequest:
    values: dict[str, object] = {"tenant": "acme", "user": "u1"}
    values.update(fields)
    return router_pb2.RouteRequest(query=query, **values)  # type: ignore[arg-type]


async def test_rpcs_counted_by_method_and_code(router: Router) -> None:
    async with grpc.aio.insecure_channel(router.running.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    await router.stub.Route(route_request(), timeout=10)
    await router.stub.Classify(router_pb2.ClassifyRequest(query=QUESTION), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await router.stub.Route(route_request(query="   "), timeout=10)
    await rpc_finished(router.running.metrics, "Route", "INVALID_ARGUMENT")

    metrics = router.scrape()

    assert metrics.value("querygate_router_rpcs_total", method="Route", code="OK") == 1
    assert (
        metrics.value(
            "querygate_router_rpcs_total", method="Route", code="INVALID_ARGUMENT"
        )
        == 1
    )
    assert (
        metrics.value("querygate_router_rpcs_total", method="Classify", code="OK") == 1
    )
    count = metrics.value("querygate_router_rpc_duration_seconds_count", method="Route")
    assert count == 2
    # Health checks are not RPCs of the router service, so they are not counted.
    assert 'method="Check"' not in metrics.text


async def test_model_retries_fallback_and_breaker(router: Router) -> None:
    first = await router.stub.Route(route_request(), timeout=10)
    second = await router.stub.Route(route_request("Name a prime number."), timeout=10)

    metrics = router.scrape()

    assert first.model == "spare"
    assert second.model == "spare"
    calls = "querygate_router_model_calls_total"
    assert metrics.value(calls, model="flaky", outcome="error") == 3
    # The breaker opened after three failures, so the second request never
    # reached the flaky model.
    assert metrics.value(calls, model="flaky", outcome="circuit_open") == 1
    assert metrics.value(calls, model="spare", outcome="success") == 2
    assert metrics.value("querygate_router_model_retries_total", model="flaky") == 2
    assert metrics.value("querygate_router_model_fallbacks_total", model="flaky") == 2
    assert metrics.value("querygate_router_breaker_state", model="flaky") == 1
    assert metrics.value("querygate_router_breaker_state", model="spare") == 0
    duration = "querygate_router_model_call_duration_seconds_count"
    assert metrics.value(duration, model="spare") == 2


async def test_requests_tokens_cost_and_savings(router: Router) -> None:
    miss = await router.stub.Route(route_request(), timeout=10)
    hit = await router.stub.Route(route_request(), timeout=10)

    metrics = router.scrape()

    assert hit.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT
    requests = "querygate_router_requests_total"
    assert (
        metrics.value(requests, tier="simple", model="spare", cache_status="miss") == 1
    )
    assert (
        metrics.value(requests, tier="simple", model="spare", cache_status="exact_hit")
        == 1
    )
    tokens = "querygate_router_tokens_total"
    assert (
        metrics.value(tokens, tenant="acme", model="spare", kind="input")
        == miss.usage.input_tokens
    )
    assert (
        metrics.value(tokens, tenant="acme", model="spare", kind="output")
        == miss.usage.output_tokens
    )
    cost = metrics.value(
        "querygate_router_cost_usd_total", tenant="acme", model="spare"
    )
    assert cost == pytest.approx(miss.cost_usd)
    baseline = metrics.value("querygate_router_baseline_cost_usd_total", tenant="acme")
    assert baseline == pytest.approx(miss.baseline_cost_usd + hit.baseline_cost_usd)
    savings = metrics.value("querygate_router_savings_usd")
    assert baseline is not None and cost is not None
    assert savings == pytest.approx(baseline - cost)
    assert savings is not None and savings > 0
    latency = "querygate_router_route_duration_seconds_count"
    assert metrics.value(latency, cache_status="exact_hit") == 1


async def test_active_tenants_and_users(router: Router) -> None:
    await router.stub.Route(route_request(tenant="acme", user="u1"), timeout=10)
    await router.stub.Route(route_request(tenant="acme", user="u2"), timeout=10)
    await router.stub.Route(route_request(tenant="globex", user=""), timeout=10)
    await router.stub.Route(route_request(tenant="acme", user="u1"), timeout=10)

    metrics = router.scrape()

    assert metrics.value("querygate_router_active_tenants") == 2
    assert metrics.value("querygate_router_active_users") == 2


async def test_classifier_version_start_time_and_feedback(router: Router) -> None:
    answer = await router.stub.Route(route_request(), timeout=10)
    await router.stub.Feedback(
        router_pb2.FeedbackRequest(
            tenant="acme",
            request_id=answer.request_id,
            rating=router_pb2.FEEDBACK_RATING_GOOD,
        ),
        timeout=10,
    )
    router.running.router.attach_classifier(FakeClassifier(version="fake-2"))

    metrics = router.scrape()

    assert metrics.value("querygate_router_classifier_info", version="fake-2") == 1
    assert metrics.value("querygate_router_classifier_info", version="fake-1") is None
    assert metrics.value("querygate_router_feedback_total", rating="good") == 1
    assert metrics.value("querygate_router_feedback_total", rating="bad") == 0
    started = metrics.value("querygate_router_start_time_seconds")
    assert started is not None
    assert 0 <= time.time() - started < 600
    assert metrics.value("process_resident_memory_bytes") is not None


async def test_rate_limit_rejections_counted() -> None:
    settings = flaky_settings(limits=LimitSettings(tenant_requests="1/minute"))
    running = await create_server(
        settings, cache=FakeCache(), classifier=FakeClassifier()
    )
    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            await stub.Route(route_request(), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Route(route_request(), timeout=10)
        await rpc_finished(running.metrics, "Route", "RESOURCE_EXHAUSTED")
        metrics = scrape(running.metrics_http.server_address[1])
    finally:
        await running.stop(grace_s=0.5)

    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    rejections = "querygate_router_rate_limit_rejections_total"
    assert metrics.value(rejections, reason="rate_limit") == 1
    assert metrics.value(rejections, reason="budget") == 0
    assert (
        metrics.value(
            "querygate_router_rpcs_total", method="Route", code="RESOURCE_EXHAUSTED"
        )
        == 1
    )


async def test_unreachable_cache_counted_as_unavailable() -> None:
    running = await create_server(
        flaky_settings(), cache=FakeCache(available=False), classifier=FakeClassifier()
    )
    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            await stub.Route(route_request(), timeout=10)
        metrics = scrape(running.metrics_http.server_address[1])
    finally:
        await running.stop(grace_s=0.5)

    assert (
        metrics.value(
            "querygate_router_requests_total",
            tier="simple",
            model="spare",
            cache_status="unavailable",
        )
        == 1
    )


async def test_stream_logged_once_with_route_fields(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router_service.rpc_telemetry")
    events = router.stub.RouteStream(route_request(tenant="initech"), timeout=10)
    summary = [event async for event in events][-1].summary

    lines = [r for r in caplog.records if r.getMessage() == "rpc_completed"]
    metrics = router.scrape()

    assert len(lines) == 1
    line = lines[0].__dict__
    assert line["method"] == "RouteStream"
    assert line["code"] == "OK"
    assert line["tenant"] == "initech"
    assert line["tier"] == "simple"
    assert line["model"] == "spare"
    assert line["cache_status"] == "miss"
    assert line["request_id"] == summary.request_id
    assert line["error_id"] is None
    assert line["duration_ms"] >= 0
    assert (
        metrics.value("querygate_router_rpcs_total", method="RouteStream", code="OK")
        == 1
    )


async def test_failed_rpc_logged_with_code_and_tenant(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router_service.rpc_telemetry")
    with pytest.raises(grpc.aio.AioRpcError):
        await router.stub.Route(route_request(query="", tenant="acme"), timeout=10)
    await rpc_finished(router.running.metrics, "Route", "INVALID_ARGUMENT")

    (line,) = [r.__dict__ for r in caplog.records if r.getMessage() == "rpc_completed"]

    assert line["method"] == "Route"
    assert line["code"] == "INVALID_ARGUMENT"
    assert line["tenant"] == "acme"
    assert line["tier"] is None
    assert line["cache_status"] is None


class BrokenBackend:
    """A backend with a bug: every call raises an error outside the domain tree."""

    async def complete(self, request: CompletionRequest) -> Completion:
        raise RuntimeError("bug in the backend")

    def stream(self, request: CompletionRequest) -> object:
        raise RuntimeError("bug in the backend")

    async def aclose(self) -> None:
        return None


async def test_internal_error_logged_with_its_error_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="router_service")
    settings = flaky_settings()
    backends = {name: build_backend(m) for name, m in settings.models.items()}
    backends["spare"] = BrokenBackend()  # type: ignore[assignment]
    running = await create_server(
        settings, backends=backends, cache=FakeCache(), classifier=FakeClassifier()
    )
    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Route(route_request(), timeout=10)
        await rpc_finished(running.metrics, "Route", "INTERNAL")
        metrics = scrape(running.metrics_http.server_address[1])
    finally:
        await running.stop(grace_s=0.5)

    (line,) = [r.__dict__ for r in caplog.records if r.getMessage() == "rpc_completed"]
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert line["code"] == "INTERNAL"
    assert line["error_id"]
    assert line["error_id"] in caught.value.details()
    assert (
        metrics.value("querygate_router_rpcs_total", method="Route", code="INTERNAL")
        == 1
    )


def test_recently_seen_forgets_after_window() -> None:
    now = [1000.0]
    seen = RecentlySeen(window_s=60.0, max_keys=10, clock=lambda: now[0])
    seen.add("a")
    now[0] += 30
    seen.add("b")
    seen.add("b")

    assert seen.count() == 2
    now[0] += 45
    assert seen.count() == 1
    seen.add("a")
    now[0] += 30
    assert seen.count() == 1
    now[0] += 60
    assert seen.count() == 0


def test_recently_seen_caps_memory() -> None:
    seen = RecentlySeen(window_s=60.0, max_keys=3, clock=lambda: 0.0)
    for key in "abcdef":
        seen.add(key)

    assert seen.count() == 3


def test_breakers_exported_closed_before_any_call() -> None:
    from router_service.streaming import StreamingRouter

    settings = flaky_settings()
    metrics = RouterMetrics()
    backends = {name: build_backend(m) for name, m in settings.models.items()}
    StreamingRouter(settings, backends, FakeCache(), metrics=metrics)

    for name in settings.models:
        value = metrics.registry.get_sample_value(
            "querygate_router_breaker_state", {"model": name}
        )
        assert value == 0


async def test_huge_tenant_cut_in_log_line(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router_service.rpc_telemetry")
    with pytest.raises(grpc.aio.AioRpcError):
        await router.stub.Route(route_request(tenant="t\x07" * 50_000), timeout=10)
    await rpc_finished(router.running.metrics, "Route", "INVALID_ARGUMENT")

    (line,) = [r.__dict__ for r in caplog.records if r.getMessage() == "rpc_completed"]

    # Each cut \x07 escapes to 4 characters, and ascii() adds 2 quotes.
    assert len(line["tenant"]) <= 4 * MAX_LOGGED_ID_CHARS + 2
    assert "\x07" not in line["tenant"]
    assert line["tenant"].startswith("'t\\x07t")
