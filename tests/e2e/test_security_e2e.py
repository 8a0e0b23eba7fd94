"""TLS, mutual TLS and API keys between a client, the router and the cache.

Both servers are real (the cache with all-MiniLM-L6-v2 and FAISS) on port 0, and
the certificates are generated in the test. The router classifies with the fake
classifier, because routing is not under test here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from e2e_servers import router_settings, start_router
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc
from tls_certs import PkiFiles, make_pki

from cache_service.api_keys import Role, add_key
from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.server import RunningServer as CacheServer
from cache_service.testing import settings_for_tests, start_cache_server
from cache_service.tls import channel_credentials
from router_service.settings import SecuritySettings
from router_service.testing import FakeClassifier

pytestmark = pytest.mark.anyio
LOOKUP = cache_pb2.LookupRequest(
    query="What is the capital of France?",
    scope=cache_pb2.Scope(tenant="acme", model="auto"),
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mtls_cache(
    real_embedder: SentenceTransformerEmbedder, pki: PkiFiles
) -> Iterator[CacheServer]:
    settings = settings_for_tests(
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca_cert,
    )
    with start_cache_server(real_embedder, settings) as running:
        yield running


def _lookup(target: str, credentials: grpc.ChannelCredentials | None) -> object:
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        return stub.Lookup(LOOKUP, timeout=10)


def test_tls_cache_serves_tls_client(
    real_embedder: SentenceTransformerEmbedder, pki: PkiFiles
) -> None:
    settings = settings_for_tests(
        tls_cert_file=pki.server_cert, tls_key_file=pki.server_key
    )
    with start_cache_server(real_embedder, settings) as running:
        response = _lookup(running.target, channel_credentials(pki.ca_cert))
        with pytest.raises(grpc.RpcError) as plain_text:
            _lookup(running.target, None)

    assert isinstance(response, cache_pb2.LookupResponse)
    assert not response.hit
    assert plain_text.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mtls_cache_refuses_client_without_certificate(
    mtls_cache: CacheServer, pki: PkiFiles
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _lookup(mtls_cache.target, channel_credentials(pki.ca_cert))

    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mtls_cache_refuses_certificate_of_other_ca(
    mtls_cache: CacheServer, pki: PkiFiles, tmp_path: Path
) -> None:
    other = make_pki(tmp_path, ca_name="another CA")
    credentials = channel_credentials(pki.ca_cert, other.client_cert, other.client_key)

    with pytest.raises(grpc.RpcError) as caught:
        _lookup(mtls_cache.target, credentials)

    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mtls_cache_serves_client_with_certificate(
    mtls_cache: CacheServer, pki: PkiFiles
) -> None:
    credentials = channel_credentials(pki.ca_cert, pki.client_cert, pki.client_key)

    response = _lookup(mtls_cache.target, credentials)

    assert isinstance(response, cache_pb2.LookupResponse)
    assert not response.hit


async def test_router_reaches_cache_over_mtls_with_service_key(
    real_embedder: SentenceTransformerEmbedder, pki: PkiFiles, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.toml"
    tenant_key, _ = add_key(keys_file, "acme", Role.TENANT)
    service_key, _ = add_key(keys_file, "querygate-router", Role.SERVICE)
    service_key_file = tmp_path / "router-service.key"
    service_key_file.write_text(service_key + "\n")
    cache_settings = settings_for_tests(
        api_keys_file=keys_file,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca_cert,
    )

    with start_cache_server(real_embedder, cache_settings) as cache:
        base = router_settings(cache.target)
        settings = replace(
            base,
            cache=replace(
                base.cache,
                api_key_file=str(service_key_file),
                tls_ca_file=str(pki.ca_cert),
                tls_cert_file=str(pki.client_cert),
                tls_key_file=str(pki.client_key),
            ),
            security=SecuritySettings(
                api_keys_file=keys_file,
                tls_cert_file=pki.server_cert,
                tls_key_file=pki.server_key,
            ),
        )
        router = await start_router(settings, FakeClassifier())
        try:
            credentials = channel_credentials(pki.ca_cert)
            async with grpc.aio.secure_channel(router.target, credentials) as channel:
                stub = router_pb2_grpc.RouterServiceStub(channel)
                metadata = (("authorization", f"Bearer {tenant_key}"),)
                request = router_pb2.RouteRequest(query="What is the capital of Peru?")
                first = await stub.Route(request, metadata=metadata, timeout=60)
                second = await stub.Route(request, metadata=metadata, timeout=60)
        finally:
            await router.stop(grace_s=1)

    assert first.cache_status == router_pb2.CACHE_STATUS_MISS
    assert second.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT
    assert second.cache_entry_id == first.cache_entry_id


async def test_router_without_service_key_answers_uncached(
    real_embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.toml"
    add_key(keys_file, "querygate-router", Role.SERVICE)
    cache_settings = settings_for_tests(api_keys_file=keys_file)

    with start_cache_server(real_embedder, cache_settings) as cache:
        router = await start_router(router_settings(cache.target), FakeClassifier())
        try:
            async with grpc.aio.insecure_channel(router.target) as channel:
                stub = router_pb2_grpc.RouterServiceStub(channel)
                response = await stub.Route(
                    router_pb2.RouteRequest(query="What is 2 + 2?", tenant="acme"),
                    timeout=60,
                )
        finally:
            await router.stop(grace_s=1)

    assert response.answer
    assert response.cache_status == router_pb2.CACHE_STATUS_UNAVAILABLE
