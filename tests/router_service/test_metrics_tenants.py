"""Tests that the tenant label of the router's metrics stays bounded.

A real router on port 0 serves its /metrics endpoint on another port 0 and
serves requests from more tenants than `metrics_max_tenants`.
"""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.config import settings_from_document
from router_service.errors import ConfigError
from router_service.metrics import OTHER_TENANTS
from router_service.server import RunningServer, create_server
from router_service.testing import FakeCache, FakeClassifier, settings_for_tests

pytestmark = pytest.mark.anyio

MAX_TENANTS = 3
TENANTS = [f"tenant-{i}" for i in range(10)]
TENANT_METRICS = (
    "querygate_router_tokens",
    "querygate_router_cost_usd",
    "querygate_router_baseline_cost_usd",
)


def _scrape(running: RunningServer) -> dict[str, list[dict[str, str]]]:
    """Return the label sets of each tenant-labelled `_total` sample."""
    port = running.metrics_http.server_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode("utf-8")
    labels: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in TENANT_METRICS:
            labels[family.name] = [
                sample.labels
                for sample in family.samples
                if sample.name.endswith("_total")
            ]
    return labels


async def _route_for_each_tenant(
    running: RunningServer, tenants: list[str] = TENANTS
) -> None:
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        for tenant in tenants:
            await stub.Route(
                router_pb2.RouteRequest(query="What is DNS?", tenant=tenant),
                timeout=30,
            )


async def test_tenants_beyond_limit_share_other_label() -> None:
    running = await create_server(
        settings_for_tests(
            metrics_address="127.0.0.1:0", metrics_max_tenants=MAX_TENANTS
        ),
        cache=FakeCache(),
        classifier=FakeClassifier(),
    )
    try:
        await _route_for_each_tenant(running)
        scraped = _scrape(running)
    finally:
        await running.stop(grace_s=0.5)
    expected = {*TENANTS[:MAX_TENANTS], OTHER_TENANTS}

    for name in TENANT_METRICS:
        assert {sample["tenant"] for sample in scraped[name]} == expected, name
    # One model and two token kinds, so two token series per label value.
    assert len(scraped["querygate_router_tokens"]) == 2 * len(expected)


async def test_zero_max_tenants_counts_all_as_other() -> None:
    running = await create_server(
        settings_for_tests(metrics_address="127.0.0.1:0", metrics_max_tenants=0),
        cache=FakeCache(),
        classifier=FakeClassifier(),
    )
    try:
        await _route_for_each_tenant(running)
        scraped = _scrape(running)
    finally:
        await running.stop(grace_s=0.5)

    for name in TENANT_METRICS:
        assert {sample["tenant"] for sample in scraped[name]} == {OTHER_TENANTS}


async def test_tenant_named_like_old_label_keeps_own_series() -> None:
    # "_other" was the overflow label value once, and is a valid tenant id.
    tenants = ["_other", "tenant-1", "tenant-2"]
    running = await create_server(
        settings_for_tests(metrics_address="127.0.0.1:0", metrics_max_tenants=2),
        cache=FakeCache(),
        classifier=FakeClassifier(),
    )
    try:
        await _route_for_each_tenant(running, tenants)
        scraped = _scrape(running)
    finally:
        await running.stop(grace_s=0.5)
    labels = {sample["tenant"] for sample in scraped["querygate_router_cost_usd"]}

    # Two tenants with their own label value plus the shared overflow value.
    assert len(labels) == 3
    assert labels == {"_other", "tenant-1", OTHER_TENANTS}


async def test_overflow_label_is_invalid_tenant() -> None:
    running = await create_server(
        settings_for_tests(), cache=FakeCache(), classifier=FakeClassifier()
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _route_for_each_tenant(running, [OTHER_TENANTS])
    finally:
        await running.stop(grace_s=0.5)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tenant" in (caught.value.details() or "")


def test_negative_max_tenants_is_rejected() -> None:
    document = {
        "server": {"metrics_max_tenants": -1},
        "tiers": {tier: {"models": ["m"]} for tier in ("simple", "medium", "complex")},
        "models": {
            "m": {
                "backend": "simulator",
                "model": "sim",
                "input_price_per_1k": 0.001,
                "output_price_per_1k": 0.002,
                "context_window": 4096,
                "timeout_s": 5.0,
            }
        },
    }
    with pytest.raises(
        ConfigError, match=r"server\.metrics_max_tenants must be 0 or more"
    ):
        settings_from_document(document, {})
