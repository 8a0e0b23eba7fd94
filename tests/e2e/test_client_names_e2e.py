"""Client certificate names under mutual TLS, on the real cache and the real router.

Both servers run on port 0 with certificates generated in the test: one CA signs
the servers' certificates and client certificates with different names. The
cache runs all-MiniLM-L6-v2 and FAISS. The router classifies with the fake
classifier, because routing is not under test here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from e2e_servers import router_settings, start_router
from grpc_health.v1 import health_pb2, health_pb2_grpc
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc
from tls_certs import PkiFiles, issue_client_certificate, make_pki

from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.server import RunningServer as CacheServer
from cache_service.testing import settings_for_tests, start_cache_server
from cache_service.tls import channel_credentials
from router_service.server import RunningServer as RouterServer
from router_service.settings import SecuritySettings
from router_service.testing import FakeClassifier

pytestmark = pytest.mark.anyio
ALLOWED_DNS = "router.querygate.internal"
ALLOWED_URI = "spiffe://querygate/router"
ALLOWED_CN = "querygate-ops"
ALLOWED = (ALLOWED_DNS, ALLOWED_URI, ALLOWED_CN)
LOOKUP = cache_pb2.LookupRequest(
    query="What is the capital of France?",
    scope=cache_pb2.Scope(tenant="acme", model="auto"),
)


@dataclass(frozen=True)
class ClientCerts:
    """A CA and client certificates that it signed, as (cert, key) paths."""

    pki: PkiFiles
    by_dns: tuple[Path, Path]
    by_uri: tuple[Path, Path]
    by_common_name: tuple[Path, Path]
    other: tuple[Path, Path]

    def credentials(self, pair: tuple[Path, Path]) -> grpc.ChannelCredentials:
        return channel_credentials(self.pki.ca_cert, pair[0], pair[1])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ClientCerts:
    folder = tmp_path_factory.mktemp("pki")
    pki = make_pki(folder)
    return ClientCerts(
        pki=pki,
        # The common name is not allowed, so only the SAN can match.
        by_dns=issue_client_certificate(pki, folder, "dns-client", (ALLOWED_DNS,)),
        by_uri=issue_client_certificate(pki, folder, "uri-client", uris=(ALLOWED_URI,)),
        by_common_name=issue_client_certificate(pki, folder, ALLOWED_CN),
        other=issue_client_certificate(
            pki, folder, "other-client", ("other.querygate.internal",)
        ),
    )


@contextmanager
def _start_cache(
    embedder: SentenceTransformerEmbedder,
    certs: ClientCerts,
    allowed: tuple[str, ...],
) -> Iterator[CacheServer]:
    settings = settings_for_tests(
        tls_cert_file=certs.pki.server_cert,
        tls_key_file=certs.pki.server_key,
        tls_client_ca_file=certs.pki.ca_cert,
        tls_client_allowed_names=allowed,
    )
    with start_cache_server(embedder, settings) as running:
        yield running


@pytest.fixture
def listing_cache(
    real_embedder: SentenceTransformerEmbedder, certs: ClientCerts
) -> Iterator[CacheServer]:
    with _start_cache(real_embedder, certs, ALLOWED) as running:
        yield running


@pytest.fixture
def open_cache(
    real_embedder: SentenceTransformerEmbedder, certs: ClientCerts
) -> Iterator[CacheServer]:
    with _start_cache(real_embedder, certs, ()) as running:
        yield running


def _lookup(target: str, credentials: grpc.ChannelCredentials) -> object:
    with grpc.secure_channel(target, credentials) as channel:
        return cache_pb2_grpc.CacheServiceStub(channel).Lookup(LOOKUP, timeout=10)


@pytest.mark.parametrize("name", ["by_dns", "by_uri", "by_common_name"])
def test_cache_serves_allowed_certificate_name(
    listing_cache: CacheServer, certs: ClientCerts, name: str
) -> None:
    credentials = certs.credentials(getattr(certs, name))

    response = _lookup(listing_cache.target, credentials)

    assert isinstance(response, cache_pb2.LookupResponse)
    assert not response.hit


def test_cache_rejects_other_certificate_name(
    listing_cache: CacheServer,
    certs: ClientCerts,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="cache_service.client_names"),
        pytest.raises(grpc.RpcError) as caught,
    ):
        _lookup(listing_cache.target, certs.credentials(certs.other))

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    details = caught.value.details() or ""
    assert "none of its names is allowed" in details
    for allowed in ALLOWED:
        assert allowed not in details
    rejected = [
        record
        for record in caplog.records
        if record.getMessage() == "client_certificate_rejected"
    ]
    assert len(rejected) == 1
    assert rejected[0].presented_names == [  # type: ignore[attr-defined]
        "other.querygate.internal",
        "other-client",
    ]


def test_cache_health_check_needs_allowed_name(
    listing_cache: CacheServer, certs: ClientCerts
) -> None:
    credentials = certs.credentials(certs.other)

    with grpc.secure_channel(listing_cache.target, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_cache_without_list_serves_any_signed_certificate(
    open_cache: CacheServer, certs: ClientCerts
) -> None:
    response = _lookup(open_cache.target, certs.credentials(certs.other))

    assert isinstance(response, cache_pb2.LookupResponse)


async def _start_mtls_router(
    cache_target: str, certs: ClientCerts, allowed: tuple[str, ...]
) -> RouterServer:
    settings = replace(
        router_settings(cache_target),
        security=SecuritySettings(
            tls_cert_file=certs.pki.server_cert,
            tls_key_file=certs.pki.server_key,
            tls_client_ca_file=certs.pki.ca_cert,
            tls_client_allowed_names=allowed,
        ),
    )
    return await start_router(settings, FakeClassifier())


@pytest.fixture
async def listing_router(
    cache_server: CacheServer, certs: ClientCerts
) -> AsyncIterator[RouterServer]:
    running = await _start_mtls_router(cache_server.target, certs, ALLOWED)
    yield running
    await running.stop(grace_s=1)


async def _route(target: str, credentials: grpc.ChannelCredentials) -> object:
    async with grpc.aio.secure_channel(target, credentials) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        request = router_pb2.RouteRequest(query="What is 2 + 2?", tenant="acme")
        return await stub.Route(request, timeout=60)


@pytest.mark.parametrize("name", ["by_dns", "by_uri", "by_common_name"])
async def test_router_serves_allowed_certificate_name(
    listing_router: RouterServer, certs: ClientCerts, name: str
) -> None:
    response = await _route(
        listing_router.target, certs.credentials(getattr(certs, name))
    )

    assert isinstance(response, router_pb2.RouteResponse)
    assert response.answer


async def test_router_rejects_other_certificate_name(
    listing_router: RouterServer,
    certs: ClientCerts,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="cache_service.client_names"),
        pytest.raises(grpc.aio.AioRpcError) as caught,
    ):
        await _route(listing_router.target, certs.credentials(certs.other))

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    details = caught.value.details() or ""
    for allowed in ALLOWED:
        assert allowed not in details
    rejected = [
        record
        for record in caplog.records
        if record.getMessage() == "client_certificate_rejected"
    ]
    assert len(rejected) == 1
    assert "other-client" in rejected[0].presented_names  # type: ignore[attr-defined]


async def test_router_rejects_other_name_on_stream(
    listing_router: RouterServer, certs: ClientCerts
) -> None:
    credentials = certs.credentials(certs.other)
    request = router_pb2.RouteRequest(query="What is 2 + 2?", tenant="acme")

    async with grpc.aio.secure_channel(listing_router.target, credentials) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.RouteStream(request, timeout=60):
                pass

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_router_without_list_serves_any_signed_certificate(
    cache_server: CacheServer, certs: ClientCerts
) -> None:
    router = await _start_mtls_router(cache_server.target, certs, ())
    try:
        response = await _route(router.target, certs.credentials(certs.other))
    finally:
        await router.stop(grace_s=1)

    assert isinstance(response, router_pb2.RouteResponse)
    assert response.answer


async def test_router_reaches_cache_only_with_allowed_name(
    real_embedder: SentenceTransformerEmbedder, certs: ClientCerts
) -> None:
    statuses = {}
    for name in ("by_dns", "other"):
        cert_file, key_file = getattr(certs, name)
        with _start_cache(real_embedder, certs, (ALLOWED_DNS,)) as cache:
            base = router_settings(cache.target)
            settings = replace(
                base,
                cache=replace(
                    base.cache,
                    tls_ca_file=str(certs.pki.ca_cert),
                    tls_cert_file=str(cert_file),
                    tls_key_file=str(key_file),
                ),
            )
            router = await start_router(settings, FakeClassifier())
            try:
                async with grpc.aio.insecure_channel(router.target) as channel:
                    stub = router_pb2_grpc.RouterServiceStub(channel)
                    request = router_pb2.RouteRequest(
                        query="What is 3 + 3?", tenant="acme"
                    )
                    await stub.Route(request, timeout=60)
                    second = await stub.Route(request, timeout=60)
            finally:
                await router.stop(grace_s=1)
            statuses[name] = second.cache_status

    assert statuses["by_dns"] == router_pb2.CACHE_STATUS_EXACT_HIT
    assert statuses["other"] == router_pb2.CACHE_STATUS_UNAVAILABLE
