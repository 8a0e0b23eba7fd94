"""Async gRPC client for the cache service, with a short timeout per call.

Any failure to reach the cache becomes `CacheUnavailableError`, so the router
can answer uncached. The warning for it is logged at most once per
`warning_interval_s`, with the number of failures in between.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service.api_keys import AUTHORIZATION_METADATA_KEY
from cache_service.log_throttle import LogThrottle
from cache_service.tls import channel_credentials
from router_service.cache_key import CacheKeyFile
from router_service.domain import CacheHit, CacheScope, FeedbackRating
from router_service.errors import (
    CacheUnavailableError,
    InvalidRequestError,
    NotFoundError,
)
from router_service.settings import CacheSettings

logger = logging.getLogger(__name__)

# gRPC waits up to 120 s between reconnection attempts by default, so a cache
# that was down for minutes could stay unused that long after it is back.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
)

_LAYER_NAMES = {
    cache_pb2.HIT_LAYER_EXACT: "exact",
    cache_pb2.HIT_LAYER_SEMANTIC: "semantic",
}
_RATINGS = {
    FeedbackRating.GOOD: cache_pb2.FEEDBACK_RATING_GOOD,
    FeedbackRating.BAD: cache_pb2.FEEDBACK_RATING_BAD,
}


def scope_to_proto(scope: CacheScope) -> cache_pb2.Scope:
    """Convert a domain scope to the cache API's message."""
    params = cache_pb2.GenerationParams()
    if scope.temperature is not None:
        params.temperature = scope.temperature
    if scope.max_tokens is not None:
        params.max_tokens = scope.max_tokens
    return cache_pb2.Scope(
        tenant=scope.tenant,
        model=scope.model,
        system_prompt=scope.system_prompt,
        conversation=[
            cache_pb2.ChatMessage(role=m.role, content=m.content)
            for m in scope.conversation
        ],
        params=params,
    )


def cache_channel_credentials(
    settings: CacheSettings,
) -> grpc.ChannelCredentials | None:
    """Return TLS credentials for the cache channel, or None for plain text."""
    if not (settings.tls or settings.tls_ca_file):
        return None
    return channel_credentials(
        Path(settings.tls_ca_file) if settings.tls_ca_file else None,
        Path(settings.tls_cert_file) if settings.tls_cert_file else None,
        Path(settings.tls_key_file) if settings.tls_key_file else None,
    )


# gRPC's own text for a failed connection names the cause, such as a refused
# port or CERTIFICATE_VERIFY_FAILED. Other codes carry the cache's messages, which
# the cache's own log already has, so they are not repeated here.
_TRANSPORT_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_MAX_DETAIL_CHARS = 300


def _transport_detail(error: grpc.aio.AioRpcError) -> str | None:
    """Return gRPC's text for a connection failure, cut short, or None."""
    if error.code() not in _TRANSPORT_CODES:
        return None
    return (error.details() or "")[:_MAX_DETAIL_CHARS]


class CacheClient:
    """`SemanticCache` over gRPC; the channel connects lazily on first use.

    With ``credentials`` the channel uses TLS, and ``api_key`` is sent as
    ``authorization: Bearer <key>`` metadata on every call. A ``CacheKeyFile``
    is checked for a new key before each call.
    """

    def __init__(
        self,
        target: str,
        timeout_s: float,
        warning_interval_s: float = 30.0,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        api_key: str | CacheKeyFile | None = None,
    ) -> None:
        self._target = target
        self._timeout_s = timeout_s
        self._channel = (
            grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
        )
        self._api_key = api_key
        self._stub = cache_pb2_grpc.CacheServiceStub(self._channel)
        self._throttle = LogThrottle(warning_interval_s)

    def _call_metadata(self) -> tuple[tuple[str, str], ...]:
        key = self._api_key
        if isinstance(key, CacheKeyFile):
            key = key.current()
        return ((AUTHORIZATION_METADATA_KEY, f"Bearer {key}"),) if key else ()

    def _unavailable(self, operation: str, error: grpc.aio.AioRpcError) -> Exception:
        suppressed = self._throttle.admit()
        if suppressed is not None:
            logger.warning(
                "cache_unavailable",
                extra={
                    "operation": operation,
                    "target": self._target,
                    "code": error.code().name,
                    "detail": _transport_detail(error),
                    "suppressed_since_last": suppressed,
                },
            )
        return CacheUnavailableError(
            f"cache {operation} failed with {error.code().name}"
        )

    async def lookup(
        self, query: str, scope: CacheScope, min_similarity: float | None = None
    ) -> CacheHit | None:
        """Return the cached answer for `query` in `scope`, or None on a miss.

        Raises:
            CacheUnavailableError: the cache did not answer within the timeout.
        """
        request = cache_pb2.LookupRequest(query=query, scope=scope_to_proto(scope))
        if min_similarity is not None:
            request.min_similarity = min_similarity
        try:
            response = await self._stub.Lookup(
                request, timeout=self._timeout_s, metadata=self._call_metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise self._unavailable("lookup", error) from error
        if not response.hit:
            return None
        return CacheHit(
            layer=_LAYER_NAMES.get(response.layer, "semantic"),
            similarity=response.similarity,
            entry_id=response.entry_id,
            answer=response.answer,
            metadata=dict(response.metadata),
        )

    async def store(
        self,
        query: str,
        scope: CacheScope,
        answer: str,
        metadata: Mapping[str, str],
        finish_reason: str,
    ) -> str | None:
        """Store an answer; return its entry id, or None when the cache declined.

        Raises:
            CacheUnavailableError: the cache did not answer within the timeout.
        """
        request = cache_pb2.StoreRequest(
            query=query,
            scope=scope_to_proto(scope),
            answer=answer,
            metadata=dict(metadata),
            finish_reason=finish_reason,
        )
        try:
            response = await self._stub.Store(
                request, timeout=self._timeout_s, metadata=self._call_metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise self._unavailable("store", error) from error
        return response.entry_id if response.stored else None

    async def feedback(
        self, entry_id: str, tenant: str, rating: FeedbackRating
    ) -> bool:
        """Mark an entry of `tenant`; return True when a bad mark removed it.

        Raises:
            NotFoundError: no entry with this id belongs to `tenant`.
            InvalidRequestError: the cache rejected the entry id.
            CacheUnavailableError: the cache did not answer within the timeout.
        """
        request = cache_pb2.FeedbackRequest(
            entry_id=entry_id, tenant=tenant, rating=_RATINGS[rating]
        )
        try:
            response = await self._stub.Feedback(
                request, timeout=self._timeout_s, metadata=self._call_metadata()
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                raise NotFoundError(
                    f"cache_entry_id {entry_id!r} not found for tenant {tenant!r}: "
                    "the entry was removed, evicted or expired, or it belongs to "
                    "another tenant."
                ) from None
            if error.code() is grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidRequestError(
                    "cache_entry_id",
                    f"the cache rejected it: {(error.details() or '').rstrip('.')}",
                    "Send the cache_entry_id of a RouteResponse.",
                ) from None
            raise self._unavailable("feedback", error) from error
        return bool(response.removed)

    async def health_status(self, timeout_s: float) -> str:
        """Return the cache's grpc.health.v1 status name, such as ``SERVING``.

        Raises:
            CacheUnavailableError: the cache did not answer within ``timeout_s``.
        """
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as error:
            raise CacheUnavailableError(
                f"the cache service at {self._target} is unreachable: "
                f"{error.code().name}"
            ) from error
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
