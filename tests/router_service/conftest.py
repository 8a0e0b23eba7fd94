"""Fixtures of the router tests: the scriptable OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_openai_server import FakeOpenAIServer, run_fake_openai_server


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """A fresh scriptable OpenAI-compatible server on 127.0.0.1."""
    with run_fake_openai_server() as server:
        yield server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
