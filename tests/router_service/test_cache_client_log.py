"""The router's warning about an unreachable cache names gRPC's reason."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from router_service.cache_client import CacheClient
from router_service.domain import CacheScope
from router_service.errors import CacheUnavailableError


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _lookup(target: str) -> None:
    client = CacheClient(target, timeout_s=2.0)
    try:
        await client.lookup("secret question text", CacheScope("acme", "auto"))
    finally:
        await client.close()


def test_unreachable_cache_warning_has_detail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = f"127.0.0.1:{_closed_port()}"

    caplog.set_level(logging.WARNING, logger="router_service.cache_client")
    with pytest.raises(CacheUnavailableError):
        asyncio.run(_lookup(target))

    (record,) = [r for r in caplog.records if r.getMessage() == "cache_unavailable"]
    assert record.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    assert record.detail
    assert len(record.detail) <= 300
    assert "secret question text" not in record.detail
