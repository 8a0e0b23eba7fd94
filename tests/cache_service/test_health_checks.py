"""Tests of the cache's dependency checks, its Health RPC and grpc.health.v1 status.

Failures are injected for real: another SQLite connection holds the write lock,
or the database file is removed while the service has it open.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service.api_keys import Role, add_key
from cache_service.embedding import Embedder, SentenceTransformerEmbedder
from cache_service.health_report import (
    CheckResult,
    CheckStatus,
    HealthReport,
    run_check,
)
from cache_service.persistence import DATABASE_NAME
from cache_service.server import RunningServer, create_server
from cache_service.testing import FakeEmbedder, settings_for_tests, start_cache_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WAIT_TIMEOUT_S = 60.0


def _result(status: CheckStatus, critical: bool) -> CheckResult:
    return CheckResult("probe", status, "detail", 0.1, critical)


def test_report_serves_unless_critical_check_fails() -> None:
    degraded = HealthReport(
        (_result(CheckStatus.OK, True), _result(CheckStatus.FAILING, False))
    )
    failing = HealthReport(
        (_result(CheckStatus.DEGRADED, False), _result(CheckStatus.FAILING, True))
    )

    assert degraded.serving
    assert degraded.status is CheckStatus.DEGRADED
    assert not failing.serving
    assert failing.status is CheckStatus.FAILING
    assert failing.failing() == {"probe": "detail"}
    assert HealthReport(()).status is CheckStatus.OK


def test_run_check_turns_exception_into_failing() -> None:
    def broken() -> tuple[CheckStatus, str]:
        raise OSError("disk I/O error")

    result = run_check("entry_store", True, broken)

    assert result.status is CheckStatus.FAILING
    assert result.detail == "OSError: disk I/O error"
    assert result.critical
    assert result.latency_ms >= 0


@pytest.fixture
def durable_server(
    tmp_path: Path, real_embedder: SentenceTransformerEmbedder
) -> Iterator[RunningServer]:
    """A real cache server with a SQLite store that re-checks health every 0.1 s."""
    settings = settings_for_tests(
        data_dir=tmp_path / "data",
        backup_dir=tmp_path / "backups",
        health_check_interval_s=0.1,
    )
    with start_cache_server(real_embedder, settings) as running:
        yield running


def _checks(channel: grpc.Channel) -> dict[str, cache_pb2.HealthCheck]:
    report = cache_pb2_grpc.CacheServiceStub(channel).Health(
        cache_pb2.HealthRequest(), timeout=30
    )
    return {check.name: check for check in report.checks}


def _wait_for_status(channel: grpc.Channel, expected: int) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while time.monotonic() < deadline:
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        if reply.status == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"health never became {expected}")


def test_health_rpc_lists_each_dependency(durable_server: RunningServer) -> None:
    with grpc.insecure_channel(durable_server.target) as channel:
        report = cache_pb2_grpc.CacheServiceStub(channel).Health(
            cache_pb2.HealthRequest(), timeout=30
        )

    checks = {check.name: check for check in report.checks}
    assert report.serving
    assert report.status == cache_pb2.CHECK_STATUS_OK
    assert set(checks) == {"embedding_model", "entry_store", "memory"}
    assert checks["embedding_model"].critical
    assert "384 dimensions" in checks["embedding_model"].detail
    assert checks["entry_store"].critical
    assert checks["entry_store"].detail == "SQLite accepts writes"
    assert not checks["memory"].critical
    assert checks["memory"].detail.startswith("resident memory ")
    assert all(check.status == cache_pb2.CHECK_STATUS_OK for check in checks.values())


def test_locked_store_is_not_serving_until_released(
    durable_server: RunningServer, tmp_path: Path
) -> None:
    blocker = sqlite3.connect(tmp_path / "data" / DATABASE_NAME, timeout=10)
    with grpc.insecure_channel(durable_server.target) as channel:
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            _wait_for_status(channel, NOT_SERVING)
            while_locked = _checks(channel)["entry_store"]
        finally:
            blocker.rollback()
            blocker.close()
        _wait_for_status(channel, SERVING)
        after = _checks(channel)["entry_store"]

    assert while_locked.status == cache_pb2.CHECK_STATUS_FAILING
    assert "database is locked" in while_locked.detail
    assert after.status == cache_pb2.CHECK_STATUS_OK


def test_removed_database_is_not_serving(
    durable_server: RunningServer, tmp_path: Path
) -> None:
    (tmp_path / "data" / DATABASE_NAME).unlink()
    with grpc.insecure_channel(durable_server.target) as channel:
        _wait_for_status(channel, NOT_SERVING)
        store = _checks(channel)["entry_store"]

    assert store.status == cache_pb2.CHECK_STATUS_FAILING
    assert "removed while open" in store.detail
    assert "restore it from a snapshot" in store.detail
    assert not (tmp_path / "data" / DATABASE_NAME).exists()


def test_health_rpc_reports_model_loading_then_failure() -> None:
    release = threading.Event()

    def load_slowly_then_fail() -> Embedder:
        release.wait(WAIT_TIMEOUT_S)
        raise RuntimeError("model files are damaged")

    running = create_server(settings_for_tests(), load_embedder=load_slowly_then_fail)
    try:
        with grpc.insecure_channel(running.target) as channel:
            loading = _checks(channel)
            release.set()
            with pytest.raises(RuntimeError):
                running.wait_until_serving(timeout_s=WAIT_TIMEOUT_S)
            failed = _checks(channel)
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
    finally:
        running.stop(grace_s=0)

    assert loading["embedding_model"].status == cache_pb2.CHECK_STATUS_FAILING
    assert loading["embedding_model"].detail == "the embedding model is still loading"
    assert failed["embedding_model"].detail == (
        "the embedding model failed to load: RuntimeError"
    )
    assert failed["entry_store"].detail == "in memory only (data_dir is empty)"
    assert status.status == NOT_SERVING


def test_snapshot_rpc_writes_file_and_counts(durable_server: RunningServer) -> None:
    with grpc.insecure_channel(durable_server.target) as channel:
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        stub.Store(
            cache_pb2.StoreRequest(
                query="Who wrote Hamlet?",
                scope=cache_pb2.Scope(tenant="acme"),
                answer="Shakespeare",
                finish_reason="stop",
            ),
            timeout=30,
        )
        snapshot = stub.Snapshot(cache_pb2.SnapshotRequest(), timeout=60)

    assert Path(snapshot.path).is_file()
    assert Path(snapshot.path).parent == durable_server.settings.backup_dir
    assert (snapshot.entries, snapshot.vectors) == (1, 1)
    assert snapshot.size_bytes == Path(snapshot.path).stat().st_size


def test_snapshot_rpc_without_store_is_failed_precondition() -> None:
    with (
        start_cache_server(FakeEmbedder(), settings_for_tests()) as running,
        grpc.insecure_channel(running.target) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        cache_pb2_grpc.CacheServiceStub(channel).Snapshot(
            cache_pb2.SnapshotRequest(), timeout=30
        )

    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "data_dir is empty" in (raised.value.details() or "")


def test_snapshot_needs_admin_key(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.toml"
    tenant_key = add_key(keys_file, "acme", Role.TENANT)[0]
    service_key = add_key(keys_file, "querygate-router", Role.SERVICE)[0]
    admin_key = add_key(keys_file, "ops", Role.ADMIN)[0]
    settings = settings_for_tests(
        api_keys_file=keys_file,
        data_dir=tmp_path / "data",
        backup_dir=tmp_path / "backups",
    )

    def code(call: Callable[..., object], key: str) -> grpc.StatusCode:
        try:
            call(metadata=(("authorization", f"Bearer {key}"),), timeout=30)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return,attr-defined]
        return grpc.StatusCode.OK

    with (
        start_cache_server(FakeEmbedder(), settings) as running,
        grpc.insecure_channel(running.target) as channel,
    ):
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        snapshot = functools.partial(stub.Snapshot, cache_pb2.SnapshotRequest())
        health = functools.partial(stub.Health, cache_pb2.HealthRequest())
        snapshot_codes = [code(snapshot, key) for key in (tenant_key, service_key)]
        admin_snapshot = code(snapshot, admin_key)
        health_codes = [code(health, key) for key in (tenant_key, service_key)]

    assert snapshot_codes == [grpc.StatusCode.PERMISSION_DENIED] * 2
    assert admin_snapshot is grpc.StatusCode.OK
    assert health_codes == [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.OK]
