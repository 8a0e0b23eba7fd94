"""Tests of the router's Health and Snapshot RPCs and its grpc.health.v1 status.

The router runs on port 0 with the committed classifier, talking to a real cache
server. Failures are injected for real: a stopped cache service, a model server
address where nothing listens, another SQLite connection holding the ledger's
write lock.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from e2e_servers import router_settings, start_router
from grpc_health.v1 import health_pb2, health_pb2_grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc

from cache_service.api_keys import Role, add_key
from cache_service.server import RunningServer as CacheServer
from cache_service.testing import start_cache_server
from router_service.errors import ConfigError
from router_service.server import RunningServer, create_server
from router_service.settings import RouterSettings, SecuritySettings
from router_service.testing import model_for_tests

pytestmark = pytest.mark.anyio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WAIT_TIMEOUT_S = 60.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(cache_target: str, tmp_path: Path) -> RouterSettings:
    return replace(
        router_settings(cache_target),
        ledger_path=tmp_path / "ledger.sqlite3",
        ledger_backup_dir=tmp_path / "backups",
        health_check_interval_s=0.1,
    )


async def _report(router: RunningServer) -> router_pb2.HealthReport:
    async with grpc.aio.insecure_channel(router.target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        return await stub.Health(router_pb2.HealthRequest(), timeout=30)


def _by_name(report: router_pb2.HealthReport) -> dict[str, router_pb2.HealthCheck]:
    return {check.name: check for check in report.checks}


async def _wait_for_status(router: RunningServer, expected: int) -> None:
    async with grpc.aio.insecure_channel(router.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while time.monotonic() < deadline:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            if reply.status == expected:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"router health never became {expected}")


async def test_health_rpc_lists_each_dependency(
    cache_server: CacheServer, real_classifier: object, tmp_path: Path
) -> None:
    router = await start_router(
        _settings(cache_server.target, tmp_path), real_classifier
    )
    try:
        report = await _report(router)
    finally:
        await router.stop(grace_s=1)

    checks = _by_name(report)
    assert report.serving
    assert report.status == router_pb2.CHECK_STATUS_OK
    assert set(checks) == {
        "classifier",
        "ledger",
        "cache_service",
        "model:simple-model",
        "model:medium-model",
        "model:complex-model",
        "memory",
    }
    assert [name for name, check in checks.items() if check.critical] == [
        "classifier",
        "ledger",
    ]
    assert checks["classifier"].detail.startswith("version ")
    assert checks["ledger"].detail == "SQLite accepts writes"
    assert checks["cache_service"].detail == "SERVING"
    assert checks["model:simple-model"].detail == "simulated backend"
    assert all(c.status == router_pb2.CHECK_STATUS_OK for c in checks.values())


async def test_stopped_cache_degrades_but_keeps_serving(
    real_embedder: object, real_classifier: object, tmp_path: Path
) -> None:
    with start_cache_server(real_embedder) as cache:  # type: ignore[arg-type]
        router = await start_router(_settings(cache.target, tmp_path), real_classifier)
        cache.stop(grace_s=0.5)
    try:
        report = await _report(router)
        await asyncio.sleep(0.3)  # several background checks run meanwhile
        await _wait_for_status(router, SERVING)
    finally:
        await router.stop(grace_s=1)

    cache_check = _by_name(report)["cache_service"]
    assert report.serving
    assert report.status == router_pb2.CHECK_STATUS_DEGRADED
    assert cache_check.status == router_pb2.CHECK_STATUS_FAILING
    assert not cache_check.critical
    assert "unreachable" in cache_check.detail
    assert "requests are answered uncached" in cache_check.detail


async def test_unreachable_model_server_degrades(
    cache_server: CacheServer, real_classifier: object, tmp_path: Path
) -> None:
    closed = model_for_tests(
        "closed-model",
        backend="openai",
        base_url=f"http://127.0.0.1:{_closed_port()}/v1",
        model="nothing-listens",
    )
    models = {
        "closed-model": closed,
        "medium-model": model_for_tests("medium-model"),
        "complex-model": model_for_tests("complex-model"),
    }
    settings = replace(
        router_settings(cache_server.target, models),
        ledger_path=tmp_path / "ledger.sqlite3",
    )
    router = await start_router(settings, real_classifier)
    try:
        report = await _report(router)
    finally:
        await router.stop(grace_s=1)

    model_check = _by_name(report)["model:closed-model"]
    assert report.serving
    assert report.status == router_pb2.CHECK_STATUS_DEGRADED
    assert model_check.status == router_pb2.CHECK_STATUS_FAILING
    assert model_check.detail == "unreachable: ConnectError"


async def test_locked_ledger_is_not_serving_until_released(
    cache_server: CacheServer, real_classifier: object, tmp_path: Path
) -> None:
    router = await start_router(
        _settings(cache_server.target, tmp_path), real_classifier
    )
    blocker = sqlite3.connect(tmp_path / "ledger.sqlite3", timeout=10)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        await _wait_for_status(router, NOT_SERVING)
        while_locked = _by_name(await _report(router))["ledger"]
        blocker.rollback()
        await _wait_for_status(router, SERVING)
        after = _by_name(await _report(router))["ledger"]
    finally:
        blocker.close()
        await router.stop(grace_s=1)

    assert while_locked.status == router_pb2.CHECK_STATUS_FAILING
    assert while_locked.critical
    assert "database is locked" in while_locked.detail
    assert after.status == router_pb2.CHECK_STATUS_OK


async def test_classifier_load_failure_reported(
    cache_server: CacheServer, tmp_path: Path
) -> None:
    def fail_to_load(_: Path | None) -> object:
        raise ConfigError("artifact manifest is damaged")

    router = await create_server(
        _settings(cache_server.target, tmp_path),
        classifier_loader=fail_to_load,  # type: ignore[arg-type]
    )
    try:
        with pytest.raises(RuntimeError):
            await router.wait_until_serving(timeout_s=30)
        report = await _report(router)
    finally:
        await router.stop(grace_s=1)

    classifier = _by_name(report)["classifier"]
    assert not report.serving
    assert report.status == router_pb2.CHECK_STATUS_FAILING
    assert classifier.detail == "the classifier failed to load: ConfigError"


async def test_snapshot_rpc_copies_ledger(
    cache_server: CacheServer, real_classifier: object, tmp_path: Path
) -> None:
    router = await start_router(
        _settings(cache_server.target, tmp_path), real_classifier
    )
    try:
        async with grpc.aio.insecure_channel(router.target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            for question in ("What is 2 + 2?", "Name a prime number."):
                await stub.Route(
                    router_pb2.RouteRequest(query=question, tenant="acme"), timeout=30
                )
            snapshot = await stub.Snapshot(router_pb2.SnapshotRequest(), timeout=30)
    finally:
        await router.stop(grace_s=1)

    rows = sqlite3.connect(snapshot.path).execute("SELECT COUNT(*) FROM requests")
    assert Path(snapshot.path).parent == tmp_path / "backups"
    assert snapshot.requests == 2
    assert rows.fetchone() == (2,)
    assert snapshot.size_bytes == Path(snapshot.path).stat().st_size


async def test_snapshot_of_memory_ledger_is_failed_precondition(
    sim_router: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(sim_router.target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Snapshot(router_pb2.SnapshotRequest(), timeout=30)

    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "the cost ledger is in memory" in (raised.value.details() or "")


async def test_snapshot_needs_admin_key(
    cache_server: CacheServer, real_classifier: object, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.toml"
    tenant_key = add_key(keys_file, "acme", Role.TENANT)[0]
    admin_key = add_key(keys_file, "ops", Role.ADMIN)[0]
    settings = replace(
        _settings(cache_server.target, tmp_path),
        security=SecuritySettings(api_keys_file=keys_file),
    )
    router = await start_router(settings, real_classifier)
    try:
        async with grpc.aio.insecure_channel(router.target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.Snapshot(
                    router_pb2.SnapshotRequest(),
                    metadata=(("authorization", f"Bearer {tenant_key}"),),
                    timeout=30,
                )
            snapshot = await stub.Snapshot(
                router_pb2.SnapshotRequest(),
                metadata=(("authorization", f"Bearer {admin_key}"),),
                timeout=30,
            )
    finally:
        await router.stop(grace_s=1)

    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "Snapshot needs an admin API key" in (denied.value.details() or "")
    assert Path(snapshot.path).is_file()
