"""API keys, tenant rules, admin RPCs and gRPC limits on a real cache server.

The server runs on port 0 with the fake embedder: these tests are about the
request guard in front of the servicer. The tenant check of Invalidate by entry
id also runs once with the real model, to see the kept entry served by
similarity. tests/e2e/test_security_e2e.py runs the same guard with the real
model, TLS and the router.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import grpc
import hypothesis
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import strategies as st
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc
from tls_certs import make_pki

from cache_service.api_keys import KeyStore, Role, add_key, hash_key, key_id_of
from cache_service.auth import CacheRequestGuard
from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.errors import SettingsError
from cache_service.server import RunningServer
from cache_service.settings import CacheSettings
from cache_service.testing import FakeEmbedder, settings_for_tests, start_cache_server

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Keys:
    acme: str
    globex: str
    service: str
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
        globex=add_key(keys_file, "globex", Role.TENANT)[0],
        service=add_key(keys_file, "querygate-router", Role.SERVICE)[0],
        admin=add_key(keys_file, "ops", Role.ADMIN)[0],
    )


@pytest.fixture
def server(keys: Keys, keys_file: Path) -> Iterator[RunningServer]:
    settings = settings_for_tests(api_keys_file=keys_file, max_metadata_bytes=4096)
    with start_cache_server(FakeEmbedder(), settings) as running:
        yield running


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as open_channel:
        yield open_channel


@pytest.fixture
def stub(channel: grpc.Channel) -> cache_pb2_grpc.CacheServiceStub:
    return cache_pb2_grpc.CacheServiceStub(channel)


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code()  # type: ignore[no-any-return, attr-defined]


def _store(
    stub: cache_pb2_grpc.CacheServiceStub, metadata: Metadata, tenant: str = ""
) -> cache_pb2.StoreResponse:
    request = cache_pb2.StoreRequest(
        query="What is the capital of France?",
        scope=cache_pb2.Scope(tenant=tenant, model="auto"),
        answer="Paris.",
        finish_reason="stop",
    )
    return stub.Store(request, metadata=metadata, timeout=10)


def _lookup(
    stub: cache_pb2_grpc.CacheServiceStub, metadata: Metadata, tenant: str = ""
) -> cache_pb2.LookupResponse:
    request = cache_pb2.LookupRequest(
        query="What is the capital of France?",
        scope=cache_pb2.Scope(tenant=tenant, model="auto"),
    )
    return stub.Lookup(request, metadata=metadata, timeout=10)


def test_request_without_key_is_unauthenticated(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _lookup(stub, (), tenant="acme")

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "missing API key" in (caught.value.details() or "")


def test_unknown_key_is_unauthenticated(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys
) -> None:
    wrong = keys.acme[:-2] + "xx"
    with pytest.raises(grpc.RpcError) as caught:
        _lookup(stub, _bearer(wrong), tenant="acme")

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert wrong not in (caught.value.details() or "")


def test_empty_tenant_takes_key_tenant(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys
) -> None:
    stored = _store(stub, _bearer(keys.acme))

    assert stored.stored
    assert _lookup(stub, _bearer(keys.acme), tenant="acme").hit
    assert not _lookup(stub, _bearer(keys.globex)).hit


def test_other_tenant_is_permission_denied(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys
) -> None:
    _store(stub, _bearer(keys.acme))

    with pytest.raises(grpc.RpcError) as caught:
        _lookup(stub, _bearer(keys.globex), tenant="acme")

    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "scope.tenant 'acme' differs from the tenant of the API key" in (
        caught.value.details() or ""
    )


def test_service_key_acts_for_named_tenant(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys
) -> None:
    _store(stub, _bearer(keys.service), tenant="acme")

    assert _lookup(stub, _bearer(keys.acme)).hit
    assert not _lookup(stub, _bearer(keys.service), tenant="globex").hit


def test_feedback_on_other_tenant_is_denied(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys
) -> None:
    entry_id = _store(stub, _bearer(keys.acme)).entry_id
    request = cache_pb2.FeedbackRequest(
        entry_id=entry_id, tenant="acme", rating=cache_pb2.FEEDBACK_RATING_BAD
    )

    code = _code(lambda: stub.Feedback(request, metadata=_bearer(keys.globex)))

    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert _lookup(stub, _bearer(keys.acme)).hit


def test_invalidate_own_tenant_with_tenant_key(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys
) -> None:
    _store(stub, _bearer(keys.acme))

    response = stub.Invalidate(
        cache_pb2.InvalidateRequest(tenant=""), metadata=_bearer(keys.acme)
    )

    assert response.removed == 1


@pytest.mark.parametrize(
    "target",
    [
        pytest.param({"tenant": "acme"}, id="tenant"),
        pytest.param(
            {
                "query": cache_pb2.QueryTarget(
                    query="What is the capital of France?",
                    scope=cache_pb2.Scope(tenant="acme", model="auto"),
                )
            },
            id="query",
        ),
    ],
)
def test_invalidate_across_tenants_needs_admin(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys, target: dict[str, object]
) -> None:
    _store(stub, _bearer(keys.acme))
    request = cache_pb2.InvalidateRequest(**target)  # type: ignore[arg-type]

    denied = _code(lambda: stub.Invalidate(request, metadata=_bearer(keys.globex)))
    removed = stub.Invalidate(request, metadata=_bearer(keys.admin)).removed

    assert denied is grpc.StatusCode.PERMISSION_DENIED
    assert removed == 1


def _invalidate_with_call(
    stub: cache_pb2_grpc.CacheServiceStub,
    request: cache_pb2.InvalidateRequest,
    key: str,
) -> tuple[cache_pb2.InvalidateResponse, grpc.StatusCode, object]:
    """Return everything a caller sees of an Invalidate: reply, status, trailers."""
    response, call = stub.Invalidate.with_call(request, metadata=_bearer(key))
    return response, call.code(), tuple(call.trailing_metadata() or ())


def test_invalidate_other_tenants_entry_looks_missing(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys
) -> None:
    entry_id = _store(stub, _bearer(keys.acme)).entry_id
    by_id = cache_pb2.InvalidateRequest(entry_id=entry_id)
    missing = cache_pb2.InvalidateRequest(entry_id=str(int(entry_id) + 1000))

    from_globex = _invalidate_with_call(stub, by_id, keys.globex)
    for_missing = _invalidate_with_call(stub, missing, keys.globex)

    assert from_globex == for_missing
    assert from_globex[0].removed == 0
    assert from_globex[1] is grpc.StatusCode.OK
    assert _lookup(stub, _bearer(keys.acme)).hit
    assert stub.Invalidate(by_id, metadata=_bearer(keys.acme)).removed == 1
    assert not _lookup(stub, _bearer(keys.acme)).hit


def test_invalidate_entry_naming_other_tenant_is_denied(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys
) -> None:
    entry_id = _store(stub, _bearer(keys.acme)).entry_id
    request = cache_pb2.InvalidateRequest(entry_id=entry_id, entry_tenant="acme")

    with pytest.raises(grpc.RpcError) as caught:
        stub.Invalidate(request, metadata=_bearer(keys.globex))

    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "entry_tenant 'acme' differs from the tenant of the API key" in (
        caught.value.details() or ""
    )
    assert _lookup(stub, _bearer(keys.acme)).hit


@pytest.mark.parametrize("role", ["admin", "service"])
def test_invalidate_entry_with_named_tenant_by_role(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys, role: str
) -> None:
    key = getattr(keys, role)
    entry_id = _store(stub, _bearer(keys.acme)).entry_id

    wrong_tenant = stub.Invalidate(
        cache_pb2.InvalidateRequest(entry_id=entry_id, entry_tenant="globex"),
        metadata=_bearer(key),
    )
    right_tenant = stub.Invalidate(
        cache_pb2.InvalidateRequest(entry_id=entry_id, entry_tenant="acme"),
        metadata=_bearer(key),
    )

    assert wrong_tenant.removed == 0
    assert right_tenant.removed == 1


@pytest.fixture
def real_model_stub(
    real_embedder: SentenceTransformerEmbedder, keys: Keys, keys_file: Path
) -> Iterator[cache_pb2_grpc.CacheServiceStub]:
    """A stub of a keyed cache server with the real model, for semantic hits."""
    settings = settings_for_tests(api_keys_file=keys_file)
    with (
        start_cache_server(real_embedder, settings) as running,
        grpc.insecure_channel(running.target) as channel,
    ):
        yield cache_pb2_grpc.CacheServiceStub(channel)


def _store_question(
    stub: cache_pb2_grpc.CacheServiceStub, key: str, query: str, answer: str
) -> str:
    request = cache_pb2.StoreRequest(
        query=query,
        scope=cache_pb2.Scope(model="auto"),
        answer=answer,
        finish_reason="stop",
    )
    response = stub.Store(request, metadata=_bearer(key), timeout=30)
    assert response.stored, response.reason
    return str(response.entry_id)


def test_invalidate_by_id_across_tenants_with_real_model(
    real_model_stub: cache_pb2_grpc.CacheServiceStub, keys: Keys
) -> None:
    stub = real_model_stub
    acme_id = _store_question(stub, keys.acme, "Who wrote Hamlet?", "Shakespeare")
    globex_id = _store_question(stub, keys.globex, "What is DNS?", "Name lookup")
    missing_id = str(max(int(acme_id), int(globex_id)) + 1000)

    attempt = _invalidate_with_call(
        stub, cache_pb2.InvalidateRequest(entry_id=acme_id), keys.globex
    )
    for_missing = _invalidate_with_call(
        stub, cache_pb2.InvalidateRequest(entry_id=missing_id), keys.globex
    )
    paraphrase = stub.Lookup(
        cache_pb2.LookupRequest(
            query="Who is the author of Hamlet?", scope=cache_pb2.Scope(model="auto")
        ),
        metadata=_bearer(keys.acme),
        timeout=30,
    )
    own = stub.Invalidate(
        cache_pb2.InvalidateRequest(entry_id=globex_id), metadata=_bearer(keys.globex)
    )

    assert attempt == for_missing
    assert attempt[0].removed == 0
    assert paraphrase.hit
    assert paraphrase.layer == cache_pb2.HIT_LAYER_SEMANTIC
    assert paraphrase.entry_id == acme_id
    assert own.removed == 1
    assert (
        stub.Stats(cache_pb2.StatsRequest(), metadata=_bearer(keys.admin)).entries == 1
    )


@pytest.mark.parametrize("role", ["admin", "service"])
def test_invalidate_other_tenant_entry_by_role(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys, role: str
) -> None:
    entry_id = _store(stub, _bearer(keys.acme)).entry_id
    request = cache_pb2.InvalidateRequest(entry_id=entry_id)

    removed = stub.Invalidate(request, metadata=_bearer(getattr(keys, role))).removed

    assert removed == 1


def test_stats_needs_service_or_admin_key(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys
) -> None:
    request = cache_pb2.StatsRequest()

    denied = _code(lambda: stub.Stats(request, metadata=_bearer(keys.acme)))

    assert denied is grpc.StatusCode.PERMISSION_DENIED
    assert stub.Stats(request, metadata=_bearer(keys.service)).entries == 0
    assert stub.Stats(request, metadata=_bearer(keys.admin)).entries == 0


class _AbortingContext:
    """The part of grpc.ServicerContext that the guard uses to reject a call."""

    code: grpc.StatusCode | None = None

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise grpc.RpcError(details)


def test_method_without_rule_needs_admin(keys: Keys, keys_file: Path) -> None:
    guard = CacheRequestGuard(KeyStore(keys_file), rules={})
    servicer_calls: list[bytes] = []

    def servicer(request: bytes, context: object) -> bytes:
        servicer_calls.append(request)
        return request

    def continuation(details: object) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(servicer)

    def call(key: str) -> _AbortingContext:
        details = SimpleNamespace(
            method="/querygate.cache.v1.CacheService/NewAdminRpc",
            invocation_metadata=_bearer(key),
        )
        handler = guard.intercept_service(continuation, details)  # type: ignore[arg-type]
        context = _AbortingContext()
        with contextlib.suppress(grpc.RpcError):
            handler.unary_unary(b"payload", context)
        return context

    assert call(keys.acme).code is grpc.StatusCode.PERMISSION_DENIED
    assert call(keys.service).code is grpc.StatusCode.PERMISSION_DENIED
    assert call(keys.admin).code is None
    assert servicer_calls == [b"payload"]


def test_health_check_needs_no_key(channel: grpc.Channel) -> None:
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=10
    )

    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_malformed_bytes_are_invalid_argument(
    channel: grpc.Channel, keys: Keys
) -> None:
    raw_lookup = channel.unary_unary(
        "/querygate.cache.v1.CacheService/Lookup",
        request_serializer=None,
        response_deserializer=None,
    )
    # Field 1 (query) with the invalid UTF-8 sequence C3 28, then a truncated tag.
    for body in (b"\x0a\x02\xc3\x28", b"\xff\xff\xff\xff"):
        with pytest.raises(grpc.RpcError) as caught:
            raw_lookup(body, metadata=_bearer(keys.acme), timeout=10)

        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid Lookup request message" in (caught.value.details() or "")


def test_oversized_metadata_is_resource_exhausted(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys
) -> None:
    metadata = (*_bearer(keys.acme), ("x-padding", "p" * 8000))

    code = _code(lambda: _lookup(stub, metadata))

    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_oversized_message_is_resource_exhausted(
    stub: cache_pb2_grpc.CacheServiceStub, keys: Keys
) -> None:
    request = cache_pb2.LookupRequest(query="q" * (5 * 1024 * 1024))

    code = _code(lambda: stub.Lookup(request, metadata=_bearer(keys.acme)))

    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _lookup(stub, _bearer(keys.acme)).hit is False


def test_keys_never_appear_in_logs(
    stub: cache_pb2_grpc.CacheServiceStub,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = keys.acme + "tail"

    _store(stub, _bearer(keys.acme))
    _lookup(stub, _bearer(keys.acme))
    _code(lambda: _lookup(stub, _bearer(wrong)))
    _code(lambda: _lookup(stub, _bearer(keys.globex), tenant="acme"))

    logged = "\n".join(
        f"{record.getMessage()} {record.__dict__}" for record in caplog.records
    )
    assert caplog.records
    for secret in (keys.acme, keys.globex, wrong):
        assert secret not in logged


def test_loopback_server_without_keys_serves_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with (
        start_cache_server(FakeEmbedder()) as running,
        grpc.insecure_channel(running.target) as channel,
    ):
        response = _lookup(cache_pb2_grpc.CacheServiceStub(channel), (), "acme")

    assert not response.hit
    assert "auth_disabled" in [record.getMessage() for record in caplog.records]


def test_settings_reject_public_address_without_keys() -> None:
    with pytest.raises(SettingsError, match=r"api_keys_file is required"):
        CacheSettings(address="0.0.0.0:50052", data_dir=None)


def test_settings_read_keys_file_from_environment(keys_file: Path, keys: Keys) -> None:
    settings = CacheSettings.load(
        {
            "QUERYGATE_CACHE_ADDRESS": "0.0.0.0:50052",
            "QUERYGATE_CACHE_API_KEYS_FILE": str(keys_file),
        }
    )

    assert settings.api_keys_file == keys_file


def test_settings_allow_public_address_with_auth_off() -> None:
    settings = CacheSettings(address="0.0.0.0:50052", data_dir=None, auth="off")

    assert settings.api_keys_file is None


def test_settings_reject_certificate_without_key(tmp_path: Path) -> None:
    cert = tmp_path / "server.pem"
    cert.write_text("not read by the check")

    with pytest.raises(SettingsError, match="must be set together"):
        settings_for_tests(tls_cert_file=cert)


@pytest.mark.parametrize(
    ("bad_file", "message"),
    [
        ("cert", r"tls_cert_file must contain a PEM certificate .*TLS_CERT_FILE"),
        ("key", r"tls_key_file must contain a PEM private key .*TLS_KEY_FILE"),
        (
            "mismatched key",
            r"tls_key_file must be the private key that matches tls_cert_file",
        ),
        ("client CA", r"tls_client_ca_file must contain at least one PEM CA"),
    ],
    ids=["garbage-cert", "garbage-key", "mismatched-key", "garbage-client-ca"],
)
def test_settings_reject_unloadable_tls_file(
    tmp_path: Path, bad_file: str, message: str
) -> None:
    pki = make_pki(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM file")
    files = {
        "tls_cert_file": pki.server_cert,
        "tls_key_file": pki.server_key,
        "tls_client_ca_file": pki.ca_cert,
    }
    if bad_file == "mismatched key":
        other = tmp_path / "other"
        other.mkdir()
        files["tls_key_file"] = make_pki(other).server_key
    else:
        name = {"cert": "tls_cert_file", "key": "tls_key_file"}.get(
            bad_file, "tls_client_ca_file"
        )
        files[name] = garbage

    with pytest.raises(SettingsError, match=message):
        settings_for_tests(**files)


def test_settings_accept_loadable_tls_files(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)

    settings = settings_for_tests(
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca_cert,
    )

    assert settings.tls_key_file == pki.server_key


@hypothesis.settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(
    value=st.one_of(
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=300),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E)).map(
            lambda key: f"Bearer {key}"
        ),
    )
)
def test_random_authorization_is_unauthenticated(
    stub: cache_pb2_grpc.CacheServiceStub, value: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _lookup(stub, (("authorization", value),), tenant="acme")

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_rpc_log_line_names_key_id(
    stub: cache_pb2_grpc.CacheServiceStub,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    _lookup(stub, _bearer(keys.acme))

    lines = [record for record in caplog.records if record.msg == "rpc_completed"]
    assert [line.__dict__.get("key_id") for line in lines] == [
        key_id_of(hash_key(keys.acme))
    ]
