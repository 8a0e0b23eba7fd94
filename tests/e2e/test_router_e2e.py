"""End to end: real router and real cache servers, real gRPC, simulated models."""

from __future__ import annotations

import socket

import grpc
import pytest
from e2e_servers import router_settings, start_router
from grpc_health.v1 import health_pb2, health_pb2_grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc

from cache_service.testing import start_cache_server
from router_service.server import RunningServer

pytestmark = pytest.mark.anyio

QUESTION = "What is the capital of France?"
PARAPHRASE = "What is France's capital?"


def route_request(
    query: str = QUESTION, tenant: str = "acme"
) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(query=query, tenant=tenant)


async def test_miss_then_exact_then_semantic_hit(
    sim_stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    miss = await sim_stub.Route(route_request(), timeout=30)
    exact = await sim_stub.Route(
        route_request("what is the capital of france"), timeout=30
    )
    semantic = await sim_stub.Route(route_request(PARAPHRASE), timeout=30)

    assert miss.cache_status == router_pb2.CACHE_STATUS_MISS
    assert "simulated" in miss.answer
    assert miss.cache_entry_id
    assert exact.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT
    assert exact.answer == miss.answer
    assert exact.cost_usd == 0.0
    assert exact.baseline_cost_usd == pytest.approx(miss.baseline_cost_usd)
    assert semantic.cache_status == router_pb2.CACHE_STATUS_SEMANTIC_HIT
    assert semantic.answer == miss.answer
    assert 0.85 <= semantic.similarity < 1.0
    assert semantic.model == miss.model
    assert semantic.tier == miss.tier


async def test_tenants_do_not_share_entries(
    sim_stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    first = await sim_stub.Route(route_request(tenant="tenant-a"), timeout=30)
    other = await sim_stub.Route(route_request(tenant="tenant-b"), timeout=30)
    again = await sim_stub.Route(route_request(tenant="tenant-a"), timeout=30)

    assert first.cache_status == router_pb2.CACHE_STATUS_MISS
    assert other.cache_status == router_pb2.CACHE_STATUS_MISS
    assert again.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT


async def test_pinned_tier_is_cached_apart_from_auto(
    sim_stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    await sim_stub.Route(route_request(), timeout=30)
    pinned = router_pb2.RouteRequest(
        query=QUESTION, tenant="acme", tier=router_pb2.TIER_COMPLEX
    )
    response = await sim_stub.Route(pinned, timeout=30)

    assert response.cache_status == router_pb2.CACHE_STATUS_MISS
    assert response.tier == router_pb2.TIER_COMPLEX
    assert response.model == "complex-model"


async def test_bad_input_is_rejected_and_next_call_served(
    sim_stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    for bad in (
        route_request("   "),
        route_request(tenant=""),
        route_request("x" * 20_000),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sim_stub.Route(bad, timeout=30)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    response = await sim_stub.Route(route_request(), timeout=30)
    assert response.answer


async def test_classify_uses_real_classifier(
    sim_stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    response = await sim_stub.Classify(
        router_pb2.ClassifyRequest(query="What is 2 + 2?"), timeout=30
    )

    assert response.tier != router_pb2.TIER_UNSPECIFIED
    assert response.classifier_version
    assert sum(p.probability for p in response.probabilities) == pytest.approx(
        1.0, abs=1e-4
    )


async def test_health_is_serving(sim_router: RunningServer) -> None:
    async with grpc.aio.insecure_channel(sim_router.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(
            health_pb2.HealthCheckRequest(service="querygate.router.v1.RouterService")
        )

    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_cache_down_still_answers(
    real_embedder: object, real_classifier: object
) -> None:
    with start_cache_server(real_embedder) as cache:  # type: ignore[arg-type]
        router = await start_router(router_settings(cache.target), real_classifier)
        async with grpc.aio.insecure_channel(router.target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            before = await stub.Route(route_request(), timeout=30)
            cache.stop(grace_s=0.5)
            after = await stub.Route(route_request(), timeout=30)
        await router.stop(grace_s=1)

    assert before.cache_status == router_pb2.CACHE_STATUS_MISS
    assert after.cache_status == router_pb2.CACHE_STATUS_UNAVAILABLE
    assert "simulated" in after.answer


async def test_cache_never_started_still_answers(real_classifier: object) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    router = await start_router(
        router_settings(f"127.0.0.1:{closed_port}"), real_classifier
    )
    try:
        async with grpc.aio.insecure_channel(router.target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            response = await stub.Route(route_request(), timeout=30)
    finally:
        await router.stop(grace_s=1)

    assert response.cache_status == router_pb2.CACHE_STATUS_UNAVAILABLE
    assert response.answer
