"""Tests of the router's gRPC surface: a real grpc.aio server on port 0 with fakes."""

from __future__ import annotations

import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.backends import CompletionRequest, build_backend
from router_service.classifier import MODEL_FILE, default_artifact_dir
from router_service.server import RunningServer, create_server
from router_service.testing import FakeCache, FakeClassifier, settings_for_tests

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await create_server(
        settings_for_tests(), cache=FakeCache(), classifier=FakeClassifier()
    )
    yield running
    await running.stop(grace_s=0.5)


@pytest.fixture
async def stub(
    server: RunningServer,
) -> AsyncIterator[router_pb2_grpc.RouterServiceStub]:
    async with grpc.aio.insecure_channel(server.target) as channel:
        yield router_pb2_grpc.RouterServiceStub(channel)


async def test_route_returns_answer_and_accounting(
    stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    response = await stub.Route(
        router_pb2.RouteRequest(query="What is 2 + 2?", tenant="acme"), timeout=10
    )

    assert "simulated" in response.answer
    assert response.tier == router_pb2.TIER_SIMPLE
    assert response.model == "simple-model"
    assert response.cache_status == router_pb2.CACHE_STATUS_MISS
    assert response.usage.output_tokens == 8
    assert response.cost_usd > 0
    assert response.baseline_cost_usd > response.cost_usd
    assert response.request_id
    assert response.finish_reason == "stop"


async def test_second_route_is_exact_hit(
    stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    request = router_pb2.RouteRequest(query="What is 2 + 2?", tenant="acme")
    first = await stub.Route(request, timeout=10)
    second = await stub.Route(request, timeout=10)

    assert second.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT
    assert second.answer == first.answer
    assert second.similarity == pytest.approx(1.0)
    assert second.cost_usd == 0.0


@pytest.mark.parametrize(
    ("request_fields", "field_name"),
    [
        ({"query": "", "tenant": "acme"}, "query"),
        ({"query": " \n\t ", "tenant": "acme"}, "query"),
        ({"query": "x" * 16_001, "tenant": "acme"}, "query"),
        ({"query": "hello"}, "tenant"),
        ({"query": "hello", "tenant": "acme\nERROR forged"}, "tenant"),
        ({"query": "hello", "tenant": "a\u202eb"}, "tenant"),
        ({"query": "hello", "tenant": "acme", "user": "u\x00"}, "user"),
        ({"query": "hello", "tenant": "acme", "user": "u" * 129}, "user"),
        ({"query": "hello", "tenant": "acme", "temperature": 3.0}, "temperature"),
        ({"query": "hello", "tenant": "acme", "max_tokens": -1}, "max_tokens"),
    ],
    ids=[
        "empty",
        "whitespace",
        "too-long",
        "no-tenant",
        "tenant-newline",
        "tenant-format-char",
        "user-control-char",
        "user-too-long",
        "temperature",
        "max-tokens",
    ],
)
async def test_bad_input_is_invalid_argument_and_server_stays_up(
    stub: router_pb2_grpc.RouterServiceStub,
    request_fields: dict[str, object],
    field_name: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Route(router_pb2.RouteRequest(**request_fields), timeout=10)

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field_name}:")
    follow_up = await stub.Route(
        router_pb2.RouteRequest(query="Still there?", tenant="acme"), timeout=10
    )
    assert follow_up.answer


async def test_classify_returns_tier_and_probabilities(
    stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    response = await stub.Classify(
        router_pb2.ClassifyRequest(query="Prove that there are infinitely many primes")
    )

    assert response.tier == router_pb2.TIER_COMPLEX
    assert response.classifier_version == "fake-1"
    probabilities = {p.tier: p.probability for p in response.probabilities}
    assert probabilities[router_pb2.TIER_COMPLEX] == pytest.approx(1.0)
    assert sum(probabilities.values()) == pytest.approx(1.0)


async def test_classify_rejects_empty_query(
    stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Classify(router_pb2.ClassifyRequest(query=""))

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("query", ["\x00", "\u200b\ufeff", "ok\x07"])
async def test_classify_rejects_query_route_rejects(
    stub: router_pb2_grpc.RouterServiceStub, query: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Classify(router_pb2.ClassifyRequest(query=query))

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "query" in caught.value.details()


async def test_reflection_lists_router_and_health(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = set()
        async for response in stub.ServerReflectionInfo(iter([request])):
            names |= {s.name for s in response.list_services_response.service}

    assert "querygate.router.v1.RouterService" in names
    assert "grpc.health.v1.Health" in names


async def test_health_is_not_serving_until_classifier_loads() -> None:
    release = threading.Event()

    def slow_loader(directory: Path | None) -> FakeClassifier:
        release.wait(timeout=30)
        return FakeClassifier()

    running = await create_server(
        settings_for_tests(), cache=FakeCache(), classifier_loader=slow_loader
    )
    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            router = router_pb2_grpc.RouterServiceStub(channel)
            before = await health.Check(health_pb2.HealthCheckRequest(service=""))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await router.Route(
                    router_pb2.RouteRequest(query="hi", tenant="acme"), timeout=10
                )
            release.set()
            await running.wait_until_serving(timeout_s=30)
            after = await health.Check(health_pb2.HealthCheckRequest(service=""))
    finally:
        release.set()
        await running.stop(grace_s=0.5)

    assert before.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert after.status == health_pb2.HealthCheckResponse.SERVING


async def test_failed_classifier_load_keeps_not_serving() -> None:
    def broken_loader(directory: Path | None) -> FakeClassifier:
        raise ValueError("artifact is corrupt")

    running = await create_server(
        settings_for_tests(), cache=FakeCache(), classifier_loader=broken_loader
    )
    try:
        with pytest.raises(RuntimeError, match="failed to load"):
            await running.wait_until_serving(timeout_s=30)
        async with grpc.aio.insecure_channel(running.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(health_pb2.HealthCheckRequest(service=""))
    finally:
        await running.stop(grace_s=0.5)

    assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_altered_artifact_logs_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    artifact = tmp_path / "artifact"
    shutil.copytree(default_artifact_dir(), artifact)
    (artifact / MODEL_FILE).write_bytes(b"not a skops file")

    running = await create_server(
        settings_for_tests(classifier_artifact_dir=artifact), cache=FakeCache()
    )
    try:
        with pytest.raises(RuntimeError, match="failed to load"):
            await running.wait_until_serving(timeout_s=30)
    finally:
        await running.stop(grace_s=0.5)
    failures = [r for r in caplog.records if r.message == "classifier_load_failed"]

    assert len(failures) == 1
    assert "does not match the SHA-256" in failures[0].error  # type: ignore[attr-defined]
    assert failures[0].artifact_dir == str(artifact)  # type: ignore[attr-defined]
    assert failures[0].exc_info is None


class ExplodingBackend:
    name = "simple-model"

    async def complete(self, request: CompletionRequest) -> None:
        raise RuntimeError("secret internal detail")

    async def aclose(self) -> None:
        return None


async def test_unexpected_error_is_internal_with_error_id() -> None:
    settings = settings_for_tests()
    backends = {name: build_backend(m) for name, m in settings.models.items()}
    backends["simple-model"] = ExplodingBackend()  # type: ignore[assignment]
    running = await create_server(
        settings, backends=backends, cache=FakeCache(), classifier=FakeClassifier()
    )
    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Route(
                    router_pb2.RouteRequest(query="hi", tenant="acme"), timeout=10
                )
            follow_up = await stub.Route(
                router_pb2.RouteRequest(query="hi", tenant="acme", tier=3), timeout=10
            )
    finally:
        await running.stop(grace_s=0.5)

    assert caught.value.code() is grpc.StatusCode.INTERNAL
    details = caught.value.details() or ""
    assert details.startswith("internal error, id ")
    assert "secret" not in details
    assert follow_up.model == "complex-model"
