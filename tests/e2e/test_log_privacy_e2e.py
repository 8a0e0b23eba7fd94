"""No log line of either service contains a prompt, an answer or an API key.

The cache service runs as a real child process with JSON logs at DEBUG on stderr.
The router runs in this process with the committed classifier, and a handler on the
root logger records every line at DEBUG, from every logger. The model is a scripted
OpenAI-compatible server whose answers, errors and streams carry a secret marker.
Both services check API keys, so the client's key, the router's key for the cache
and a rejected key are secrets that must not appear either.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from e2e_servers import start_router
from fake_openai_server import (
    FakeOpenAIServer,
    Reply,
    completion_body,
    run_fake_openai_server,
    stream_events,
)
from querygate.router.v1 import router_pb2, router_pb2_grpc
from service_processes import child_environment, wait_until_serving

from cache_service.api_keys import Role, add_key
from router_service.logging_setup import JsonLineFormatter
from router_service.server import RunningServer
from router_service.settings import CacheSettings, RouterSettings
from router_service.testing import model_for_tests, settings_for_tests

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
QUERY_MARK = "qmark7f3a91"
SYSTEM_MARK = "smark52c0e4"
TURN_MARK = "tmark0b9d17"
ANSWER_MARK = "amark6e21c8"
REJECTED_KEY = "qg_kmark4d8e02rejectedkeyrejectedkeyrejected0"
MARKS = (QUERY_MARK, SYSTEM_MARK, TURN_MARK, ANSWER_MARK, REJECTED_KEY)
CACHE_KEY_ENV = "QUERYGATE_TEST_CACHE_KEY"


@dataclass(frozen=True)
class Keys:
    """A keys file with a tenant key for the client and a service key for the router."""

    path: Path
    tenant_key: str
    service_key: str

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tenant_key}"),)


class RecordingHandler(logging.Handler):
    """Keeps each record as its JSON line plus every attribute it carries."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self._formatter = JsonLineFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self._formatter.format(record))
        self.lines.append(repr(record.__dict__))


@pytest.fixture
def recorded_logs() -> Iterator[RecordingHandler]:
    handler = RecordingHandler()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous_level)


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Keys:
    path = tmp_path / "keys.toml"
    tenant_key, _ = add_key(path, "acme", Role.TENANT)
    service_key, _ = add_key(path, "router", Role.SERVICE)
    monkeypatch.setenv(CACHE_KEY_ENV, service_key)
    return Keys(path, tenant_key, service_key)


@pytest.fixture
def cache_process(tmp_path: Path, keys: Keys) -> Iterator[tuple[str, Path]]:
    """The cache service as a child process; yields its target and its log file."""
    port_file = tmp_path / "cache.port"
    log_file = tmp_path / "cache.log"
    env = child_environment(
        QUERYGATE_CACHE_ADDRESS="127.0.0.1:0",
        QUERYGATE_CACHE_DATA_DIR=str(tmp_path / "cache"),
        QUERYGATE_CACHE_BACKUP_DIR=str(tmp_path / "backups"),
        QUERYGATE_LOG_FORMAT="json",
        QUERYGATE_LOG_LEVEL="DEBUG",
        QUERYGATE_CACHE_API_KEYS_FILE=str(keys.path),
    )
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cache_service", "--port-file", str(port_file)],
            env=env,
            cwd=REPO,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 180
        while not port_file.exists() or not port_file.read_text().strip():
            assert process.poll() is None, log_file.read_text()
            assert time.monotonic() < deadline, "no port file after 180 s"
            time.sleep(0.1)
        target = f"127.0.0.1:{int(port_file.read_text())}"
        wait_until_serving(target, process)  # health checks need no key
        yield target, log_file
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture
def model_server() -> Iterator[FakeOpenAIServer]:
    with run_fake_openai_server() as server:
        yield server


def privacy_settings(cache_target: str, base_url: str, keys: Keys) -> RouterSettings:
    """Every tier calls the scripted server, then a simulator as fallback."""
    models = {
        "remote": model_for_tests("remote", backend="openai", base_url=base_url),
        "spare": model_for_tests("spare"),
    }
    chain = ("remote", "spare")
    settings = settings_for_tests(
        models=models, tiers={"simple": chain, "medium": chain, "complex": chain}
    )
    cache = CacheSettings(target=cache_target, timeout_s=30, api_key_env=CACHE_KEY_ENV)
    security = replace(settings.security, api_keys_file=keys.path)
    return replace(settings, cache=cache, security=security)


@pytest.fixture
async def router(
    cache_process: tuple[str, Path],
    model_server: FakeOpenAIServer,
    real_classifier: object,
    keys: Keys,
) -> AsyncIterator[RunningServer]:
    settings = privacy_settings(cache_process[0], model_server.base_url, keys)
    running = await start_router(settings, real_classifier)
    yield running
    await running.stop(grace_s=1)


def marked_request(question: str, **fields: object) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(
        query=f"{question} {QUERY_MARK}",
        tenant="acme",
        user="u1",
        system_prompt=f"Answer briefly. {SYSTEM_MARK}",
        conversation=[
            router_pb2.ChatMessage(role="user", content=f"Earlier {TURN_MARK}"),
            router_pb2.ChatMessage(role="assistant", content="Noted."),
        ],
        **fields,  # type: ignore[arg-type]
    )


async def wait_for_rpc(running: RunningServer, method: str, code: str) -> None:
    # grpc.aio sends an aborted RPC's status before the interceptor logs it.
    labels = {"method": method, "code": code}
    for _ in range(500):
        sample = running.metrics.registry.get_sample_value(
            "querygate_router_rpcs_total", labels
        )
        if sample:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {code} {method} RPC was logged")


async def send_marked_traffic(
    stub: router_pb2_grpc.RouterServiceStub,
    model_server: FakeOpenAIServer,
    key: tuple[tuple[str, str], ...],
) -> None:
    """Send requests down every path that handles the marked text."""
    answer = completion_body(f"The capital is Paris. {ANSWER_MARK}")
    model_server.enqueue(Reply(body=answer))
    question = marked_request("What is the capital of France?")
    first = await stub.Route(question, metadata=key)
    hit = await stub.Route(question, metadata=key)
    assert hit.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT
    assert ANSWER_MARK in hit.answer

    model_server.enqueue(Reply(events=stream_events(["Streamed ", ANSWER_MARK])))
    events = stub.RouteStream(marked_request("Name a large planet."), metadata=key)
    assert ANSWER_MARK in "".join([event.delta async for event in events])

    # Failures whose bodies echo the text, then a body that is not JSON.
    echo = {"error": {"message": f"bad input {QUERY_MARK} {ANSWER_MARK}"}}
    model_server.enqueue(*(Reply(status=500, body=echo) for _ in range(3)))
    await stub.Route(marked_request("How do tides work?"), metadata=key)
    model_server.enqueue(Reply(body=f"not json {ANSWER_MARK}"))
    await stub.Route(marked_request("Why is the sky blue?"), metadata=key)

    classify = router_pb2.ClassifyRequest(query=f"Explain {QUERY_MARK}")
    await stub.Classify(classify, metadata=key)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Route(marked_request("Too hot", temperature=5.0), metadata=key)
    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await stub.Route(
            marked_request("Who are you?"),
            metadata=(("authorization", f"Bearer {REJECTED_KEY}"),),
        )
    assert rejected.value.code() is grpc.StatusCode.UNAUTHENTICATED
    await stub.Feedback(
        router_pb2.FeedbackRequest(
            tenant="acme",
            request_id=first.request_id,
            rating=router_pb2.FEEDBACK_RATING_BAD,
        ),
        metadata=key,
    )


async def test_no_log_line_contains_prompt_or_answer(
    router: RunningServer,
    cache_process: tuple[str, Path],
    model_server: FakeOpenAIServer,
    recorded_logs: RecordingHandler,
    keys: Keys,
) -> None:
    async with grpc.aio.insecure_channel(router.target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        await send_marked_traffic(stub, model_server, keys.metadata())
    await wait_for_rpc(router, "Route", "INVALID_ARGUMENT")
    await wait_for_rpc(router, "Route", "UNAUTHENTICATED")
    router_lines = recorded_logs.lines
    cache_lines = cache_process[1].read_text(encoding="utf-8").splitlines()

    # Both logs must have seen the traffic, or the check below proves nothing.
    assert sum('"rpc_completed"' in line for line in router_lines) >= 8
    assert sum('"method": "Store"' in line for line in cache_lines) >= 2
    assert any('"method": "Feedback"' in line for line in cache_lines)
    for mark in (*MARKS, keys.tenant_key, keys.service_key):
        leaked = [line for line in router_lines + cache_lines if mark in line]
        assert not leaked, f"{mark} found in {leaked[0]}"
