"""Tests of one data folder per cache: its lock, id collisions, failed writes."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.errors import StorageError
from cache_service.persistence import DATABASE_NAME
from cache_service.server import create_server
from cache_service.testing import settings_for_tests, start_cache_server

SCOPE = cache_pb2.Scope(tenant="acme")


def _store(
    stub: cache_pb2_grpc.CacheServiceStub, query: str
) -> cache_pb2.StoreResponse:
    request = cache_pb2.StoreRequest(
        query=query, scope=SCOPE, answer=f"answer to {query}", finish_reason="stop"
    )
    return stub.Store(request, timeout=30)


def _entry_store_check(stub: cache_pb2_grpc.CacheServiceStub) -> cache_pb2.HealthCheck:
    report = stub.Health(cache_pb2.HealthRequest(), timeout=30)
    (check,) = [check for check in report.checks if check.name == "entry_store"]
    return check


def test_second_server_on_same_data_dir_fails(
    tmp_path: Path, real_embedder: SentenceTransformerEmbedder
) -> None:
    settings = settings_for_tests(data_dir=tmp_path / "data")
    in_use = re.escape(f"cache data folder {tmp_path / 'data'} is in use by another")
    with (
        start_cache_server(real_embedder, settings),
        pytest.raises(StorageError, match=in_use),
    ):
        create_server(settings, real_embedder)

    # Stopping the first server releases the folder.
    with start_cache_server(real_embedder, settings) as second:
        assert second.wait_until_serving(timeout_s=60).stats().entries == 0


def test_cache_process_on_used_data_dir_exits(
    tmp_path: Path, real_embedder: SentenceTransformerEmbedder
) -> None:
    data_dir = tmp_path / "data"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("QUERYGATE_")
    }
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        QUERYGATE_CACHE_ADDRESS="127.0.0.1:0",
        QUERYGATE_CACHE_DATA_DIR=str(data_dir),
    )
    with start_cache_server(real_embedder, settings_for_tests(data_dir=data_dir)):
        result = subprocess.run(
            [sys.executable, "-m", "cache_service"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    assert result.returncode == 1
    assert "startup_failed" in result.stderr
    assert f"cache data folder {data_dir} is in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_store_skips_ids_another_writer_took(
    tmp_path: Path, real_embedder: SentenceTransformerEmbedder
) -> None:
    settings = settings_for_tests(data_dir=tmp_path / "data")
    with (
        start_cache_server(real_embedder, settings) as running,
        grpc.insecure_channel(running.target) as channel,
    ):
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        assert _store(stub, "Who wrote Hamlet?").entry_id == "1"

        # Another writer ignores the folder lock and takes ids 2 and 3.
        other = sqlite3.connect(tmp_path / "data" / DATABASE_NAME)
        with other:
            for entry_id in (2, 3):
                other.execute(
                    "INSERT INTO entries (entry_id, scope_key, tenant,"
                    " normalized_query, answer, metadata, created_at)"
                    " VALUES (?, 'other', 'other', ?, 'x', '{}', 0)",
                    (entry_id, f"other {entry_id}"),
                )
            other.execute("UPDATE manifest SET value = '4' WHERE key = 'next_id'")
        other.close()

        first = _store(stub, "What is the capital of France?")
        second = _store(stub, "How tall is Mount Everest?")
        found = stub.Lookup(
            cache_pb2.LookupRequest(query="What is the capital of France?", scope=SCOPE)
        )
        check = _entry_store_check(stub)

    assert first.entry_id == "4"
    assert second.entry_id == "5"
    assert found.hit
    assert found.entry_id == "4"
    assert check.status == cache_pb2.CHECK_STATUS_OK


def test_failed_write_degrades_health_and_logs(
    tmp_path: Path,
    real_embedder: SentenceTransformerEmbedder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for_tests(data_dir=tmp_path / "data")
    database = tmp_path / "data" / DATABASE_NAME
    with (
        start_cache_server(real_embedder, settings) as running,
        grpc.insecure_channel(running.target) as channel,
    ):
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        # A trigger makes every insert fail with a message the client must not see.
        with sqlite3.connect(database) as other:
            other.execute(
                "CREATE TRIGGER reject BEFORE INSERT ON entries"
                " BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
            )
        with (
            caplog.at_level(logging.ERROR, logger="cache_service.servicer"),
            pytest.raises(grpc.RpcError) as failed,
        ):
            _store(stub, "Who wrote Hamlet?")
        degraded = _entry_store_check(stub)

        with sqlite3.connect(database) as other:
            other.execute("DROP TRIGGER reject")
        stored = _store(stub, "Who wrote Hamlet?")
        recovered = _entry_store_check(stub)

    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    details = failed.value.details() or ""
    assert details.startswith("cache store write failed; see the server log")
    assert "disk says no" not in details
    (record,) = [r for r in caplog.records if r.getMessage() == "storage_failed"]
    assert details.endswith(f"error id {record.__dict__['error_id']}")
    assert record.exc_info is not None
    assert "Who wrote Hamlet" not in caplog.text
    assert degraded.status == cache_pb2.CHECK_STATUS_DEGRADED
    assert "last entry write failed" in degraded.detail
    assert stored.stored
    assert recovered.status == cache_pb2.CHECK_STATUS_OK
