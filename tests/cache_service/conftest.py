"""Fixtures of the cache service tests: embedders, a controllable clock, a server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cache_service.cache import SemanticCache
from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.server import RunningServer
from cache_service.testing import (
    FakeEmbedder,
    ManualClock,
    settings_for_tests,
    start_cache_server,
)


@pytest.fixture(scope="session")
def real_embedder() -> SentenceTransformerEmbedder:
    """The packaged all-MiniLM-L6-v2, loaded once per test session."""
    return SentenceTransformerEmbedder.load()


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake_cache(fake_embedder: FakeEmbedder, clock: ManualClock) -> SemanticCache:
    """A cache on the fake embedder and the manual clock, with default settings."""
    return SemanticCache(settings_for_tests(), fake_embedder, clock=clock)


@pytest.fixture
def real_server(
    real_embedder: SentenceTransformerEmbedder,
) -> Iterator[RunningServer]:
    """A real cache server on port 0 with the real model and FAISS."""
    with start_cache_server(real_embedder) as running:
        yield running
