"""Request guard of the cache service: a server interceptor run before each RPC.

For every unary request it:

1. parses the request bytes itself, so a malformed message (bad protobuf or
   invalid UTF-8 in a string field) gets INVALID_ARGUMENT instead of gRPC's own
   INTERNAL;
2. with a key store, reads ``authorization: Bearer <key>`` and rejects a
   missing or unknown key with UNAUTHENTICATED;
3. applies the method's rule from ``cache_method_rules``: an empty tenant field
   takes the key's tenant, and another tenant or an admin RPC without an admin
   key gets PERMISSION_DENIED. Invalidate by entry id carries the tenant in
   ``entry_tenant``, and the cache removes nothing when the entry belongs to
   another tenant.

A method missing from the rules table needs an admin key, so a new RPC is closed
until someone writes its rule. Health checks need no key. Without a key store
(auth off, or loopback without a keys file) only step 1 runs.

With ``tls_client_allowed_names`` set, every call, health checks included, must
also come with a client certificate that carries an allowed name
(``cache_service.client_names``); other calls get UNAUTHENTICATED before step 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import grpc
from google.protobuf.message import Message
from querygate.cache.v1 import cache_pb2

from cache_service.access import (
    REFLECTION_METHOD,
    AccessRule,
    Denial,
    RequestAccess,
    admin_only,
    any_key,
    service_or_admin,
    tenant_at,
)
from cache_service.api_keys import KeyStore, Principal
from cache_service.client_names import ClientNameCheck
from cache_service.errors import (
    AuthenticationError,
    CacheError,
    InvalidRequestError,
    PermissionDeniedError,
    status_code_for,
)
from cache_service.rpc_handlers import rewrap_handler
from cache_service.rpc_telemetry import annotate_rpc
from cache_service.settings import CacheSettings

logger = logging.getLogger(__name__)

SERVICE_NAME = cache_pb2.DESCRIPTOR.services_by_name["CacheService"].full_name


def load_key_store(settings: CacheSettings) -> KeyStore | None:
    """Return the key store of ``settings``, or None when requests go unchecked.

    Logs a warning when the service serves without authentication. Settings
    validation has already rejected that case on a non-loopback address unless
    ``auth`` is "off".
    """
    if settings.api_keys_file is not None:
        keys = KeyStore(settings.api_keys_file)
        logger.info(
            "api_keys_loaded",
            extra={"path": str(settings.api_keys_file), "keys": len(keys)},
        )
        return keys
    logger.warning(
        "auth_disabled",
        extra={
            "address": settings.address,
            "auth": settings.auth,
            "remedy": "set QUERYGATE_CACHE_API_KEYS_FILE to require API keys",
        },
    )
    return None


def _method(name: str) -> str:
    return f"/{SERVICE_NAME}/{name}"


def cache_method_rules() -> dict[str, AccessRule]:
    """Return the access rule of each cache RPC, keyed by its full method name.

    Methods missing here need an admin key. Add admin RPCs with ``admin_only`` to
    say so explicitly.
    """
    return {
        _method("Lookup"): tenant_at("scope", "tenant"),
        _method("Store"): tenant_at("scope", "tenant"),
        _method("Feedback"): tenant_at("tenant"),
        _method("Invalidate"): _invalidate_rule(),
        _method("Stats"): service_or_admin("Stats"),
        _method("Health"): service_or_admin("Health"),
        _method("Snapshot"): admin_only("Snapshot"),
        REFLECTION_METHOD: any_key,
    }


def _invalidate_rule() -> AccessRule:
    """Invalidate: a tenant key removes only its own tenant's entries.

    By entry id, a tenant key's ``entry_tenant`` is checked and filled like the
    tenant of Feedback, and the cache keeps an entry of another tenant. Service and
    admin keys may leave it empty to remove the entry of any tenant.
    """
    by_tenant = tenant_at("tenant")
    by_query = tenant_at("query", "scope", "tenant")
    by_entry = tenant_at("entry_tenant")

    def rule(principal: Principal, request: Message) -> Denial | None:
        request = cast(cache_pb2.InvalidateRequest, request)
        target = request.WhichOneof("target")
        if target == "tenant":
            return by_tenant(principal, request)
        if target == "query":
            return by_query(principal, request)
        if target == "entry_id":
            if principal.acts_for_any_tenant:
                return None
            return by_entry(principal, request)
        # No target: the servicer rejects the request with INVALID_ARGUMENT.
        return None

    return rule


class CacheRequestGuard(grpc.ServerInterceptor):
    """Parses, authenticates and authorizes each RPC before the servicer runs.

    With ``client_names`` it first checks the name of the client certificate.
    """

    def __init__(
        self,
        keys: KeyStore | None,
        rules: Mapping[str, AccessRule],
        client_names: ClientNameCheck | None = None,
    ) -> None:
        self._client_names = client_names
        self._access = RequestAccess(
            keys,
            rules,
            unauthenticated=AuthenticationError,
            permission_denied=PermissionDeniedError,
            annotate=annotate_rpc,
        )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        metadata = handler_call_details.invocation_metadata  # type: ignore[attr-defined]
        guard_streams = self._access.needs_key(method) or self._client_names is not None
        return rewrap_handler(
            handler,
            unary_unary=lambda _: self._guard_unary(handler, method, metadata),
            unary_stream=lambda _: self._guard_unary_stream(handler, method, metadata),
            stream_stream=(
                (lambda _: self._guard_stream_stream(handler, method, metadata))
                if guard_streams
                else None
            ),
            raw_requests=True,
        )

    def _guard_unary(
        self, handler: grpc.RpcMethodHandler, method: str, metadata: Any
    ) -> Callable[[bytes, grpc.ServicerContext], Any]:
        def guarded(raw: bytes, context: grpc.ServicerContext) -> Any:
            request = self._admit(handler, method, metadata, raw, context)
            return handler.unary_unary(request, context)

        return guarded

    def _guard_unary_stream(
        self, handler: grpc.RpcMethodHandler, method: str, metadata: Any
    ) -> Callable[[bytes, grpc.ServicerContext], Any]:
        def guarded(raw: bytes, context: grpc.ServicerContext) -> Any:
            request = self._admit(handler, method, metadata, raw, context)
            yield from handler.unary_stream(request, context)

        return guarded

    def _guard_stream_stream(
        self, handler: grpc.RpcMethodHandler, method: str, metadata: Any
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def guarded(requests: Any, context: grpc.ServicerContext) -> Any:
            def check() -> Any:
                self._check_client_name(method, context)
                return self._access.principal(method, metadata)

            self._abort_on_error(context, check)
            yield from handler.stream_stream(requests, context)

        return guarded

    def _admit(
        self,
        handler: grpc.RpcMethodHandler,
        method: str,
        metadata: Any,
        raw: bytes,
        context: grpc.ServicerContext,
    ) -> Any:
        """Return the parsed request, or abort the RPC with the reason."""

        def check() -> Any:
            self._check_client_name(method, context)
            return self._access.admit(
                method, metadata, lambda: parse_request(handler, method, raw)
            )

        return self._abort_on_error(context, check)

    def _check_client_name(self, method: str, context: grpc.ServicerContext) -> None:
        if self._client_names is None:
            return
        message = self._client_names.rejection(method, context.auth_context())
        if message is not None:
            raise AuthenticationError(message)

    @staticmethod
    def _abort_on_error(context: grpc.ServicerContext, check: Callable[[], Any]) -> Any:
        try:
            return check()
        except CacheError as error:
            context.abort(status_code_for(error), str(error))
        # context.abort always raises, but grpc does not annotate it as NoReturn.
        raise AssertionError("unreachable")


def parse_request(handler: grpc.RpcMethodHandler, method: str, raw: bytes) -> Any:
    """Deserialize ``raw`` with the handler's parser.

    Raises:
        InvalidRequestError: the bytes are not a valid message of the method's
            request type.
    """
    if handler.request_deserializer is None:
        return raw
    try:
        return handler.request_deserializer(raw)
    except Exception:
        raise InvalidRequestError(
            f"the request body is not a valid {method.rpartition('/')[2]} request "
            "message: it is malformed protobuf or has invalid UTF-8 in a string "
            "field. Build requests with the querygate.cache.v1 stubs."
        ) from None
