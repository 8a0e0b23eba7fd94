"""Fixtures of the end-to-end tests: the real cache service and the real router.

Both servers run in-process on port 0: the cache with the packaged
all-MiniLM-L6-v2 model and FAISS, the router with the committed complexity
classifier. Only the model backend varies (simulator or llama.cpp).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from e2e_servers import router_settings, start_router
from querygate.router.v1 import router_pb2_grpc

from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.server import RunningServer as CacheServer
from cache_service.testing import start_cache_server
from router_service.server import RunningServer, load_complexity_classifier


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def real_embedder() -> SentenceTransformerEmbedder:
    """The packaged all-MiniLM-L6-v2, loaded once per test session."""
    return SentenceTransformerEmbedder.load()


@pytest.fixture(scope="session")
def real_classifier() -> object:
    """The committed complexity classifier, loaded once per test session."""
    return load_complexity_classifier(None)


@pytest.fixture
def cache_server(real_embedder: SentenceTransformerEmbedder) -> Iterator[CacheServer]:
    """A real cache server on port 0."""
    with start_cache_server(real_embedder) as running:
        yield running


@pytest.fixture
async def sim_router(
    cache_server: CacheServer, real_classifier: object
) -> AsyncIterator[RunningServer]:
    """The real router on simulator models, talking to the real cache server."""
    running = await start_router(router_settings(cache_server.target), real_classifier)
    yield running
    await running.stop(grace_s=1)


@pytest.fixture
async def sim_stub(
    sim_router: RunningServer,
) -> AsyncIterator[router_pb2_grpc.RouterServiceStub]:
    async with grpc.aio.insecure_channel(sim_router.target) as channel:
        yield router_pb2_grpc.RouterServiceStub(channel)
