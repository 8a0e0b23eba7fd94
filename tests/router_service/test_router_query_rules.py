"""Server tests of the router's character rules on the query text."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.server import RunningServer, create_server
from router_service.testing import FakeCache, FakeClassifier, settings_for_tests

pytestmark = pytest.mark.anyio

INVISIBLE_QUERIES = [
    pytest.param("\x00", id="nul"),
    pytest.param("\x07\x1b\x7f", id="controls"),
    pytest.param("\u200b", id="zero-width-space"),
    pytest.param("\ufeff \u200b\n", id="bom-and-whitespace"),
]


@pytest.fixture
def cache() -> FakeCache:
    return FakeCache()


@pytest.fixture
async def stub(cache: FakeCache) -> AsyncIterator[router_pb2_grpc.RouterServiceStub]:
    running: RunningServer = await create_server(
        settings_for_tests(), cache=cache, classifier=FakeClassifier()
    )
    async with grpc.aio.insecure_channel(running.target) as channel:
        yield router_pb2_grpc.RouterServiceStub(channel)
    await running.stop(grace_s=0.5)


@pytest.mark.parametrize("query", INVISIBLE_QUERIES)
async def test_route_rejects_invisible_query(
    stub: router_pb2_grpc.RouterServiceStub, cache: FakeCache, query: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Route(router_pb2.RouteRequest(query=query, tenant="acme"))

    details = caught.value.details() or ""
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("query: must contain a visible character")
    assert "Send the question to answer." in details
    assert cache.lookups == []
    assert cache.stores == []


@pytest.mark.parametrize("query", INVISIBLE_QUERIES)
async def test_route_stream_rejects_invisible_query(
    stub: router_pb2_grpc.RouterServiceStub, query: str
) -> None:
    request = router_pb2.RouteRequest(query=query, tenant="acme")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.RouteStream(request):
            pass

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(
        "query: must contain a visible character"
    )


async def test_route_rejects_control_character_inside_query(
    stub: router_pb2_grpc.RouterServiceStub, cache: FakeCache
) -> None:
    request = router_pb2.RouteRequest(query="What is\x1b[2J 2 + 2?", tenant="acme")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Route(request)

    details = caught.value.details() or ""
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(
        "query: must not contain control characters other than tab, newline and "
        "carriage return; got U+001B at position 7"
    )
    assert "Remove the control characters" in details
    assert cache.lookups == []


async def test_route_accepts_tabs_newlines_and_format_characters(
    stub: router_pb2_grpc.RouterServiceStub, cache: FakeCache
) -> None:
    query = "Summarize:\r\n\tthe word\u200bjoiner, thumbs up \U0001f44d\u200d"
    response = await stub.Route(router_pb2.RouteRequest(query=query, tenant="acme"))

    assert response.answer
    assert [stored[0] for stored in cache.stores] == [query]
