"""Tests of the OpenAI-compatible HTTP backend against a scripted local server."""

from __future__ import annotations

import socket
from email.utils import formatdate

import pytest
from fake_openai_server import (
    FakeOpenAIServer,
    Reply,
    completion_body,
    stream_events,
)

from router_service.backends import (
    ChatMessage,
    CompletionRequest,
    OpenAIChatBackend,
    build_backend,
)
from router_service.backends.openai_http import parse_retry_after
from router_service.errors import (
    ConfigError,
    ModelConnectionError,
    ModelHTTPError,
    ModelRefusedError,
    ModelResponseError,
    ModelTimeoutError,
)
from router_service.testing import model_for_tests

pytestmark = pytest.mark.anyio

QUESTION = (ChatMessage("user", "What is the capital of France?"),)


def backend_for(server_url: str) -> OpenAIChatBackend:
    settings = model_for_tests(
        "remote", backend="openai", base_url=server_url, model="gpt-test"
    )
    return OpenAIChatBackend(settings)


def request(
    timeout_s: float = 5.0,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> CompletionRequest:
    return CompletionRequest(QUESTION, timeout_s, temperature, max_tokens)


async def test_complete_parses_answer_and_usage(fake_openai: FakeOpenAIServer) -> None:
    backend = backend_for(fake_openai.base_url)
    completion = await backend.complete(request(temperature=0.2, max_tokens=50))
    await backend.aclose()

    assert completion.text == "Paris."
    assert completion.finish_reason == "stop"
    assert completion.input_tokens == 11
    assert completion.output_tokens == 3
    sent = fake_openai.requests[0]
    assert sent["model"] == "gpt-test"
    assert sent["messages"] == [
        {"role": "user", "content": "What is the capital of France?"}
    ]
    assert sent["temperature"] == 0.2
    assert sent["max_tokens"] == 50


async def test_complete_sends_bearer_key_from_env(
    fake_openai: FakeOpenAIServer,
) -> None:
    settings = model_for_tests(
        "remote",
        backend="openai",
        base_url=fake_openai.base_url,
        api_key_env="QG_TEST_KEY",
    )
    backend = build_backend(settings, {"QG_TEST_KEY": "sk-test-123"})
    await backend.complete(request())
    await backend.aclose()

    assert fake_openai.headers[0]["Authorization"] == "Bearer sk-test-123"


def test_build_backend_rejects_unset_key_variable() -> None:
    settings = model_for_tests(
        "remote", backend="openai", base_url="http://127.0.0.1:1/v1", api_key_env="NOPE"
    )
    with pytest.raises(ConfigError, match=r"models\.remote\.api_key_env .*NOPE"):
        build_backend(settings, {})


async def test_server_error_is_retryable(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.enqueue(Reply(status=500, body={"error": "boom"}))
    backend = backend_for(fake_openai.base_url)
    with pytest.raises(ModelHTTPError) as caught:
        await backend.complete(request())
    await backend.aclose()

    assert caught.value.status_code == 500
    assert caught.value.retryable


async def test_rate_limit_reports_retry_after(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.enqueue(Reply(status=429, body={}, headers={"Retry-After": "7"}))
    backend = backend_for(fake_openai.base_url)
    with pytest.raises(ModelHTTPError) as caught:
        await backend.complete(request())
    await backend.aclose()

    assert caught.value.retryable
    assert caught.value.retry_after_s == 7.0


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_are_not_retryable(
    fake_openai: FakeOpenAIServer, status: int
) -> None:
    fake_openai.enqueue(Reply(status=status, body={"error": "no"}))
    backend = backend_for(fake_openai.base_url)
    with pytest.raises(ModelHTTPError) as caught:
        await backend.complete(request())
    await backend.aclose()

    assert not caught.value.retryable


async def test_hanging_server_times_out(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.enqueue(Reply(hang=True))
    backend = backend_for(fake_openai.base_url)
    with pytest.raises(ModelTimeoutError):
        await backend.complete(request(timeout_s=0.3))
    await backend.aclose()


@pytest.mark.parametrize(
    "body",
    ["{not json", {"choices": []}, {"choices": [{"message": {"content": 5}}]}],
    ids=["invalid-json", "no-choices", "content-not-text"],
)
async def test_invalid_body_raises_response_error(
    fake_openai: FakeOpenAIServer, body: object
) -> None:
    fake_openai.enqueue(Reply(body=body))
    backend = backend_for(fake_openai.base_url)
    with pytest.raises(ModelResponseError):
        await backend.complete(request())
    await backend.aclose()


async def test_content_filter_raises_refused(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.enqueue(Reply(body=completion_body("", finish_reason="content_filter")))
    backend = backend_for(fake_openai.base_url)
    with pytest.raises(ModelRefusedError):
        await backend.complete(request())
    await backend.aclose()


async def test_missing_usage_is_estimated(fake_openai: FakeOpenAIServer) -> None:
    body = completion_body("twelve chars")
    del body["usage"]
    fake_openai.enqueue(Reply(body=body))
    backend = backend_for(fake_openai.base_url)
    completion = await backend.complete(request())
    await backend.aclose()

    assert completion.output_tokens == 3
    assert completion.input_tokens > 0


async def test_closed_port_raises_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = backend_for(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ModelConnectionError):
        await backend.complete(request())
    await backend.aclose()


async def test_stream_yields_deltas_then_usage(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.enqueue(Reply(events=stream_events(["Par", "is", "."])))
    backend = backend_for(fake_openai.base_url)
    chunks = [chunk async for chunk in backend.stream(request())]
    await backend.aclose()

    assert "".join(c.text for c in chunks) == "Paris."
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].input_tokens == 9
    assert chunks[-1].output_tokens == 3
    assert fake_openai.requests[0]["stream"] is True


async def test_dropped_stream_raises_response_error(
    fake_openai: FakeOpenAIServer,
) -> None:
    fake_openai.enqueue(
        Reply(events=stream_events(["Par", "is", "."]), drop_after_events=2)
    )
    backend = backend_for(fake_openai.base_url)
    received = []
    with pytest.raises(ModelResponseError, match="without a finish reason"):
        async for chunk in backend.stream(request()):
            received.append(chunk.text)
    await backend.aclose()

    assert received == ["Par", "is"]


async def test_stream_error_status_raises_http_error(
    fake_openai: FakeOpenAIServer,
) -> None:
    fake_openai.enqueue(Reply(status=503, body={"error": "busy"}))
    backend = backend_for(fake_openai.base_url)
    with pytest.raises(ModelHTTPError) as caught:
        async for _ in backend.stream(request()):
            pass
    await backend.aclose()

    assert caught.value.status_code == 503


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0

    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(formatdate(now + 10, usegmt=True), now) == 10.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.llama
async def test_real_llama_server_answers(llama_server: str) -> None:
    settings = model_for_tests(
        "local",
        backend="openai",
        base_url=llama_server,
        model="smollm2-135m-instruct",
        timeout_s=120.0,
    )
    backend = build_backend(settings)
    completion = await backend.complete(
        request(timeout_s=120.0, temperature=0.0, max_tokens=64)
    )
    await backend.aclose()

    assert completion.text.strip()
    assert completion.finish_reason in ("stop", "length")
    assert completion.input_tokens > 0
    assert 0 < completion.output_tokens <= 64


@pytest.mark.llama
async def test_real_llama_server_streams(llama_server: str) -> None:
    settings = model_for_tests(
        "local",
        backend="openai",
        base_url=llama_server,
        model="smollm2-135m-instruct",
        timeout_s=120.0,
    )
    backend = build_backend(settings)
    chunks = [
        chunk
        async for chunk in backend.stream(
            request(timeout_s=120.0, temperature=0.0, max_tokens=32)
        )
    ]
    await backend.aclose()

    text_chunks = [c for c in chunks if c.text]
    assert len(text_chunks) > 1
    assert chunks[-1].finish_reason in ("stop", "length")
    assert chunks[-1].output_tokens > 0
