"""Rotating the router's service key for the cache without restarting the router.

A real cache (all-MiniLM-L6-v2 and FAISS) requires API keys, and a real router
reads its key for the cache from a file. The file changes from key A to key B
while both servers run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from e2e_servers import router_settings, start_router
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc

from cache_service.api_keys import Role, add_key, revoke_key
from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.testing import settings_for_tests, start_cache_server
from router_service.testing import FakeClassifier

pytestmark = pytest.mark.anyio
# Longest wait for the cache to drop a revoked key. It checks its keys file for
# changes at most once every 2 s.
REVOKE_TIMEOUT_S = 30.0


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file and rename it over ``path``."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    partial.replace(path)


async def _wait_until_rejected(target: str, key: str) -> None:
    """Poll the cache until it rejects ``key`` with UNAUTHENTICATED."""
    request = cache_pb2.LookupRequest(
        query="probe", scope=cache_pb2.Scope(tenant="acme", model="auto")
    )
    deadline = time.monotonic() + REVOKE_TIMEOUT_S
    async with grpc.aio.insecure_channel(target) as channel:
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        while True:
            try:
                await stub.Lookup(
                    request, metadata=(("authorization", f"Bearer {key}"),), timeout=10
                )
            except grpc.aio.AioRpcError as error:
                if error.code() is grpc.StatusCode.UNAUTHENTICATED:
                    return
                raise
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the cache still accepts the key after {REVOKE_TIMEOUT_S} s"
                )
            await asyncio.sleep(0.2)


def _cache_key_ids(caplog: pytest.LogCaptureFixture, method: str) -> list[str]:
    return [
        str(getattr(record, "key_id", None))
        for record in caplog.records
        if record.name == "cache_service.rpc_telemetry"
        and record.getMessage() == "rpc_completed"
        and str(getattr(record, "method", "")).rpartition("/")[2] == method
    ]


async def test_router_follows_rotated_key_file(
    real_embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys_file = tmp_path / "keys.toml"
    key_a, key_id_a = add_key(keys_file, "querygate-router", Role.SERVICE)
    key_b, key_id_b = add_key(keys_file, "querygate-router", Role.SERVICE)
    router_key_file = tmp_path / "router-service.key"
    router_key_file.write_text(key_a + "\n")
    first = router_pb2.RouteRequest(query="What is the capital of Peru?", tenant="acme")
    second = router_pb2.RouteRequest(query="How tall is Mont Blanc?", tenant="acme")

    with (
        caplog.at_level(logging.INFO),
        start_cache_server(
            real_embedder, settings_for_tests(api_keys_file=keys_file)
        ) as cache,
    ):
        base = router_settings(cache.target)
        settings = replace(
            base, cache=replace(base.cache, api_key_file=str(router_key_file))
        )
        router = await start_router(settings, FakeClassifier())
        try:
            async with grpc.aio.insecure_channel(router.target) as channel:
                stub = router_pb2_grpc.RouterServiceStub(channel)
                with_a = await stub.Route(first, timeout=60)
                ids_before = _cache_key_ids(caplog, "Lookup")

                # The cache accepts both keys while the file changes.
                _replace(router_key_file, key_b + "\n")
                caplog.clear()
                with_b = await stub.Route(second, timeout=60)
                ids_rotated = _cache_key_ids(caplog, "Lookup")

                revoke_key(keys_file, key_id_a)
                await _wait_until_rejected(cache.target, key_a)
                caplog.clear()
                after_revoke = await stub.Route(first, timeout=60)
                ids_after = _cache_key_ids(caplog, "Lookup")
        finally:
            await router.stop(grace_s=1)

    assert with_a.cache_status == router_pb2.CACHE_STATUS_MISS
    assert ids_before == [key_id_a]
    assert with_b.cache_status == router_pb2.CACHE_STATUS_MISS
    assert ids_rotated == [key_id_b]
    assert after_revoke.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT
    assert after_revoke.cache_entry_id == with_a.cache_entry_id
    assert ids_after == [key_id_b]
