"""API keys, tenant rules, admin RPCs and input limits on a real router server.

The router runs on port 0 with simulator models, the fake cache and the fake
classifier; tests/e2e/test_security_e2e.py runs it against the real cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc
from tls_certs import make_pki

from cache_service.api_keys import Role, add_key, generate_key, hash_key, key_id_of
from router_service import client
from router_service.cache_key import CacheKeyFile, cache_api_key
from router_service.config import settings_from_document
from router_service.errors import ConfigError
from router_service.server import RunningServer, create_server
from router_service.settings import CacheSettings, SecuritySettings
from router_service.testing import FakeCache, FakeClassifier, settings_for_tests

pytestmark = pytest.mark.anyio
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Keys:
    acme: str
    admin: str


def _bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "keys.toml"


@pytest.fixture
def keys(keys_file: Path) -> Keys:
    return Keys(
        acme=add_key(keys_file, "acme", Role.TENANT)[0],
        admin=add_key(keys_file, "ops", Role.ADMIN)[0],
    )


@pytest.fixture
def cache() -> FakeCache:
    return FakeCache()


@pytest.fixture
async def server(
    keys: Keys, keys_file: Path, cache: FakeCache
) -> AsyncIterator[RunningServer]:
    settings = replace(
        settings_for_tests(max_metadata_bytes=4096),
        security=SecuritySettings(api_keys_file=keys_file),
    )
    running = await create_server(
        settings,
        cache=cache,
        classifier=FakeClassifier(),
        classifier_loader=lambda _: FakeClassifier(version="fake-2"),
    )
    yield running
    await running.stop(grace_s=0.5)


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.target) as open_channel:
        yield open_channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> router_pb2_grpc.RouterServiceStub:
    return router_pb2_grpc.RouterServiceStub(channel)


def _route(tenant: str = "", **fields: object) -> router_pb2.RouteRequest:
    values: dict[str, object] = {"query": "What is 2 + 2?", "tenant": tenant}
    values.update(fields)
    return router_pb2.RouteRequest(**values)  # type: ignore[arg-type]


async def test_route_without_key_is_unauthenticated(
    stub: router_pb2_grpc.RouterServiceStub, cache: FakeCache
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Route(_route("acme"), timeout=10)

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert cache.lookups == []


async def test_unknown_key_is_unauthenticated(
    stub: router_pb2_grpc.RouterServiceStub, keys: Keys
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Route(_route(), metadata=_bearer(keys.acme + "x"), timeout=10)

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert keys.acme not in (caught.value.details() or "")


async def test_route_takes_tenant_from_key(
    stub: router_pb2_grpc.RouterServiceStub, keys: Keys, cache: FakeCache
) -> None:
    response = await stub.Route(_route(), metadata=_bearer(keys.acme), timeout=10)

    assert response.answer
    assert [scope.tenant for _, scope, _ in cache.lookups] == ["acme"]


async def test_route_for_other_tenant_is_denied(
    stub: router_pb2_grpc.RouterServiceStub, keys: Keys, cache: FakeCache
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Route(_route("globex"), metadata=_bearer(keys.acme), timeout=10)

    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "tenant 'globex' differs from the tenant of the API key" in (
        caught.value.details() or ""
    )
    assert cache.lookups == []


async def test_route_stream_checks_key_and_tenant(
    stub: router_pb2_grpc.RouterServiceStub, keys: Keys
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
        async for _ in stub.RouteStream(_route("acme"), timeout=10):
            pass
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        async for _ in stub.RouteStream(
            _route("globex"), metadata=_bearer(keys.acme), timeout=10
        ):
            pass
    events = [
        event
        async for event in stub.RouteStream(
            _route(), metadata=_bearer(keys.acme), timeout=10
        )
    ]

    assert unauthenticated.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert events[-1].HasField("summary")


async def test_feedback_for_other_tenant_is_denied(
    stub: router_pb2_grpc.RouterServiceStub, keys: Keys
) -> None:
    request = router_pb2.FeedbackRequest(
        tenant="globex", request_id="r1", rating=router_pb2.FEEDBACK_RATING_BAD
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Feedback(request, metadata=_bearer(keys.acme), timeout=10)

    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_reload_classifier_needs_admin_key(
    stub: router_pb2_grpc.RouterServiceStub, keys: Keys
) -> None:
    request = router_pb2.ReloadClassifierRequest()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReloadClassifier(request, metadata=_bearer(keys.acme), timeout=10)
    # Generous: the reload imports scikit-learn on first use.
    response = await stub.ReloadClassifier(
        request, metadata=_bearer(keys.admin), timeout=60
    )

    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "ReloadClassifier needs an admin API key" in (caught.value.details() or "")
    assert response.classifier_version == "fake-2"


async def test_classify_accepts_any_valid_key(
    stub: router_pb2_grpc.RouterServiceStub, keys: Keys
) -> None:
    request = router_pb2.ClassifyRequest(query="Prove it")

    response = await stub.Classify(request, metadata=_bearer(keys.acme), timeout=10)

    assert response.tier == router_pb2.TIER_COMPLEX


async def test_health_needs_no_key(channel: grpc.aio.Channel) -> None:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=10
    )

    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_malformed_bytes_are_invalid_argument(
    channel: grpc.aio.Channel, keys: Keys
) -> None:
    raw_route = channel.unary_unary("/querygate.router.v1.RouterService/Route")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_route(b"\x0a\x02\xc3\x28", metadata=_bearer(keys.acme), timeout=10)

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "request: must be a valid Route request message" in (
        caught.value.details() or ""
    )


async def test_oversized_metadata_is_resource_exhausted(
    stub: router_pb2_grpc.RouterServiceStub, keys: Keys
) -> None:
    metadata = (*_bearer(keys.acme), ("x-padding", "p" * 8000))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Route(_route(), metadata=metadata, timeout=10)

    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_oversized_message_is_resource_exhausted(
    stub: router_pb2_grpc.RouterServiceStub, keys: Keys
) -> None:
    request = router_pb2.RouteRequest(query="q" * (5 * 1024 * 1024))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Route(request, metadata=_bearer(keys.acme), timeout=10)

    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"system_prompt": "s" * 32_001},
            "system_prompt: must be at most 32000 characters "
            "(max_system_prompt_chars); got 32001",
            id="system-prompt",
        ),
        pytest.param(
            {"conversation": [router_pb2.ChatMessage(role="user", content="hi")] * 101},
            "conversation: must have at most 100 turns (max_conversation_turns)",
            id="turns",
        ),
        pytest.param(
            {
                "conversation": [
                    router_pb2.ChatMessage(role="user", content="x" * 100_001)
                ]
            },
            "conversation: must total at most 100000 characters of content",
            id="conversation-chars",
        ),
        pytest.param(
            {"query": "q" * 16_001},
            "query: must be at most 16000 characters; got 16001",
            id="query",
        ),
    ],
)
async def test_input_limits_are_invalid_argument(
    stub: router_pb2_grpc.RouterServiceStub,
    keys: Keys,
    fields: dict[str, object],
    message: str,
) -> None:
    request = _route("", **fields)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Route(request, metadata=_bearer(keys.acme), timeout=10)

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_keys_never_appear_in_logs(
    stub: router_pb2_grpc.RouterServiceStub,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = keys.admin + "tail"

    await stub.Route(_route(), metadata=_bearer(keys.acme), timeout=10)
    for metadata in (_bearer(wrong), _bearer(keys.acme)):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ReloadClassifier(
                router_pb2.ReloadClassifierRequest(), metadata=metadata, timeout=10
            )

    logged = "\n".join(
        f"{record.getMessage()} {record.__dict__}" for record in caplog.records
    )
    assert caplog.records
    for secret in (keys.acme, keys.admin, wrong):
        assert secret not in logged


def _document(**server: object) -> dict[str, object]:
    return {
        "server": server,
        "tiers": {tier: {"models": ["m"]} for tier in ("simple", "medium", "complex")},
        "models": {
            "m": {
                "backend": "simulator",
                "model": "sim",
                "input_price_per_1k": 0.0,
                "output_price_per_1k": 0.0,
                "context_window": 4096,
                "timeout_s": 5.0,
            }
        },
    }


def test_public_address_without_keys_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"security\.api_keys_file is required"):
        settings_from_document(_document(address="0.0.0.0:50051"), {})


def test_public_address_with_auth_off_is_allowed() -> None:
    document = _document(address="0.0.0.0:50051")
    document["security"] = {"auth": "off"}

    settings = settings_from_document(document, {})

    assert settings.security.auth == "off"


def test_keys_file_from_environment(keys_file: Path, keys: Keys) -> None:
    settings = settings_from_document(
        _document(address="0.0.0.0:50051"),
        {"QUERYGATE_ROUTER_API_KEYS_FILE": str(keys_file)},
    )

    assert settings.security.api_keys_file == keys_file


def test_half_configured_tls_is_rejected(tmp_path: Path) -> None:
    cert = tmp_path / "server.pem"
    cert.write_text("not used")
    document = _document()
    document["security"] = {"tls_cert_file": str(cert)}

    with pytest.raises(ConfigError, match="must be set together"):
        settings_from_document(document, {})


@pytest.mark.parametrize(
    ("table", "bad_file", "message"),
    [
        ("security", "garbage-cert", r"security\.tls_cert_file must contain a PEM"),
        ("security", "mismatched-key", r"security\.tls_key_file must be the private"),
        ("security", "garbage-ca", r"security\.tls_client_ca_file must contain"),
        ("cache", "garbage-cert", r"cache\.tls_cert_file must contain a PEM"),
        ("cache", "mismatched-key", r"cache\.tls_key_file must be the private"),
        ("cache", "garbage-ca", r"cache\.tls_ca_file must contain at least one"),
    ],
    ids=[
        "security-garbage-cert",
        "security-mismatched-key",
        "security-garbage-ca",
        "cache-garbage-cert",
        "cache-mismatched-key",
        "cache-garbage-ca",
    ],
)
def test_unloadable_tls_file_is_rejected(
    tmp_path: Path, table: str, bad_file: str, message: str
) -> None:
    pki = make_pki(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM file")
    ca_name = "tls_client_ca_file" if table == "security" else "tls_ca_file"
    cert, key = (
        (pki.server_cert, pki.server_key)
        if table == "security"
        else (pki.client_cert, pki.client_key)
    )
    files = {
        "tls_cert_file": str(cert),
        "tls_key_file": str(key),
        ca_name: str(pki.ca_cert),
    }
    if bad_file == "garbage-cert":
        files["tls_cert_file"] = str(garbage)
    elif bad_file == "mismatched-key":
        files["tls_key_file"] = str(make_pki(other).server_key)
    else:
        files[ca_name] = str(garbage)
    document = _document()
    document[table] = files

    with pytest.raises(ConfigError, match=message):
        settings_from_document(document, {})


def test_loadable_tls_files_are_accepted(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    document = _document()
    document["security"] = {
        "tls_cert_file": str(pki.server_cert),
        "tls_key_file": str(pki.server_key),
        "tls_client_ca_file": str(pki.ca_cert),
    }
    document["cache"] = {
        "tls_ca_file": str(pki.ca_cert),
        "tls_cert_file": str(pki.client_cert),
        "tls_key_file": str(pki.client_key),
    }

    settings = settings_from_document(document, {})

    assert settings.security.tls_key_file == pki.server_key
    assert settings.cache.tls_key_file == str(pki.client_key)


def test_cache_client_certificate_needs_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    document = _document()
    document["cache"] = {
        "tls": False,
        "tls_cert_file": str(pki.client_cert),
        "tls_key_file": str(pki.client_key),
    }

    with pytest.raises(
        ConfigError,
        match=r"cache\.tls_cert_file and cache\.tls_key_file need TLS to the cache",
    ):
        settings_from_document(document, {})


def test_cache_client_certificate_with_tls_is_accepted(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    document = _document()
    document["cache"] = {
        "tls": True,
        "tls_cert_file": str(pki.client_cert),
        "tls_key_file": str(pki.client_key),
    }

    settings = settings_from_document(document, {})

    assert settings.cache.tls


async def test_client_sends_key_from_environment(
    server: RunningServer,
    keys: Keys,
    cache: FakeCache,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(client.API_KEY_ENV, keys.acme)

    exit_code = await asyncio.to_thread(
        client.main, ["What is 2 + 2?", "--target", server.target, "--json"]
    )

    assert exit_code == 0
    assert json.loads(capsys.readouterr().out)["model"] == "simple-model"
    assert [scope.tenant for _, scope, _ in cache.lookups] == ["acme"]


async def test_client_without_key_reports_unauthenticated(
    server: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(client.API_KEY_ENV, raising=False)

    exit_code = await asyncio.to_thread(
        client.main, ["What is 2 + 2?", "--target", server.target]
    )

    assert exit_code == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err


async def test_tls_router_serves_tls_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_pki(tmp_path)
    settings = replace(
        settings_for_tests(),
        security=SecuritySettings(
            tls_cert_file=pki.server_cert, tls_key_file=pki.server_key
        ),
    )
    running = await create_server(
        settings, cache=FakeCache(), classifier=FakeClassifier()
    )
    try:
        argv = ["What is 2 + 2?", "--target", running.target, "--tenant", "acme"]
        with_tls = await asyncio.to_thread(
            client.main, [*argv, "--tls-ca-file", str(pki.ca_cert), "--json"]
        )
        plain_text = await asyncio.to_thread(client.main, [*argv, "--timeout", "5"])
    finally:
        await running.stop(grace_s=0.5)

    assert with_tls == 0
    assert plain_text == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_cache_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_CACHE_KEY", "qg_service")

    key = cache_api_key(CacheSettings(api_key_env="ROUTER_CACHE_KEY"))

    assert key == "qg_service"


def test_cache_key_variable_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTER_CACHE_KEY", raising=False)

    with pytest.raises(ConfigError, match="ROUTER_CACHE_KEY, but that environment"):
        cache_api_key(CacheSettings(api_key_env="ROUTER_CACHE_KEY"))


def test_cache_key_from_file(tmp_path: Path) -> None:
    key_file = tmp_path / "service.key"
    service_key = generate_key()
    key_file.write_text(service_key + "\n")

    key = cache_api_key(CacheSettings(api_key_file=str(key_file)))

    assert isinstance(key, CacheKeyFile)
    assert key.current() == service_key
    assert cache_api_key(CacheSettings()) is None


def test_empty_cache_key_file_is_rejected(tmp_path: Path) -> None:
    key_file = tmp_path / "service.key"
    key_file.write_text("\n")

    with pytest.raises(ConfigError, match="is empty"):
        cache_api_key(CacheSettings(api_key_file=str(key_file)))


def test_router_key_command_lists_keys(keys_file: Path, keys: Keys) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "router_service.keys", "list", "--file", str(keys_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert "tenant   acme" in completed.stdout
    assert "admin    ops" in completed.stdout
    assert keys.acme not in completed.stdout


async def test_rpc_log_line_names_key_id(
    stub: router_pb2_grpc.RouterServiceStub,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    await stub.Route(_route(), metadata=_bearer(keys.acme), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Route(_route("globex"), metadata=_bearer(keys.acme), timeout=10)

    lines = [record for record in caplog.records if record.msg == "rpc_completed"]
    key_id = key_id_of(hash_key(keys.acme))
    assert [line.__dict__.get("key_id") for line in lines] == [key_id, key_id]
    assert [line.__dict__.get("code") for line in lines] == [
        "OK",
        "PERMISSION_DENIED",
    ]
