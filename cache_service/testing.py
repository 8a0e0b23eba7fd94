"""Helpers for tests that need a cache: a fast fake embedder and an in-process server.

The fake is for unit tests only. End-to-end tests pass the real
``SentenceTransformerEmbedder`` to ``start_cache_server``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np

from cache_service.embedding import Embedder, Vectors
from cache_service.server import RunningServer, create_server
from cache_service.settings import CacheSettings


class FakeEmbedder:
    """Deterministic embedder: each text maps to a seeded random unit vector.

    Random unit vectors in many dimensions are nearly orthogonal (cosine near 0),
    so distinct texts never match unless a test pins vectors with ``set_vector``
    or ``set_similar``. Tokens are counted as words plus two special tokens.
    """

    def __init__(self, dimension: int = 64, max_tokens: int = 256) -> None:
        self._dimension = dimension
        self._max_tokens = max_tokens
        self._pinned: dict[str, Vectors] = {}
        self._lock = threading.Lock()
        self.embed_calls = 0

    @property
    def model_name(self) -> str:
        return f"fake-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def token_count(self, text: str) -> int:
        return len(text.split()) + 2

    def vector(self, text: str) -> Vectors:
        """Return the unit vector of ``text`` without counting an embed call."""
        if text in self._pinned:
            return self._pinned[text]
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        raw = np.random.default_rng(seed).standard_normal(self._dimension)
        return (raw / np.linalg.norm(raw)).astype(np.float32)

    def set_vector(self, text: str, vector: Vectors) -> None:
        """Pin the vector of ``text``, normalized to unit length."""
        unit = np.asarray(vector, dtype=np.float64)
        self._pinned[text] = (unit / np.linalg.norm(unit)).astype(np.float32)

    def set_similar(self, text: str, anchor: str, cosine: float) -> None:
        """Pin the vector of ``text`` at cosine ``cosine`` to that of ``anchor``."""
        base = self.vector(anchor).astype(np.float64)
        noise = np.random.default_rng(len(text)).standard_normal(self._dimension)
        orthogonal = noise - noise.dot(base) * base
        orthogonal /= np.linalg.norm(orthogonal)
        self.set_vector(text, cosine * base + np.sqrt(1 - cosine**2) * orthogonal)

    def embed(self, texts: Sequence[str]) -> Vectors:
        with self._lock:
            self.embed_calls += 1
        return np.stack([self.vector(text) for text in texts])


class ManualClock:
    """A wall clock that moves only when a test calls ``advance``."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings_for_tests(**overrides: Any) -> CacheSettings:
    """Return settings for a test server on 127.0.0.1, port 0, with ``overrides``.

    Entries stay in memory unless ``data_dir`` is among the overrides.
    """
    return replace(CacheSettings(address="127.0.0.1:0", data_dir=None), **overrides)


@contextmanager
def start_cache_server(
    embedder: Embedder,
    settings: CacheSettings | None = None,
    clock: Callable[[], float] | None = None,
) -> Iterator[RunningServer]:
    """Run a real cache server on a free port until the block exits.

    The server is SERVING when the block starts, and ``running.target`` is the address
    to dial.
    """
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    running = create_server(settings or settings_for_tests(), embedder, **options)
    try:
        running.wait_until_serving(timeout_s=60)
        yield running
    finally:
        running.stop(grace_s=1)
