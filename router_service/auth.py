"""Request guard of the router: a grpc.aio server interceptor run before each RPC.

It applies the same steps as the cache service's guard (``cache_service.auth``):
parse the request bytes (malformed bytes get INVALID_ARGUMENT), check the
``authorization: Bearer <key>`` metadata against the keys file (UNAUTHENTICATED),
then the method's rule from ``ROUTER_METHOD_RULES`` (PERMISSION_DENIED). The
request's ``tenant`` comes from the key: an empty field takes the key's tenant.

A method missing from the rules table needs an admin key, so a new RPC is closed
until someone writes its rule. Health checks need no key. Without a key store
only the parsing step runs.

With ``[security] tls_client_allowed_names`` set, every call, health checks
included, must also come with a client certificate that carries an allowed name
(``cache_service.client_names``); other calls get UNAUTHENTICATED first.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from querygate.router.v1 import router_pb2

from cache_service.access import (
    REFLECTION_METHOD,
    AccessRule,
    RequestAccess,
    admin_only,
    any_key,
    service_or_admin,
    tenant_at,
)
from cache_service.api_keys import KeyStore
from cache_service.client_names import ClientNameCheck
from cache_service.rpc_handlers import rewrap_handler
from router_service.errors import (
    AuthenticationError,
    InvalidRequestError,
    PermissionDeniedError,
    RouterError,
    grpc_status_for,
)
from router_service.rpc_telemetry import annotate_rpc
from router_service.settings import SecuritySettings

logger = logging.getLogger(__name__)

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


def _method(name: str) -> str:
    return f"/{SERVICE_NAME}/{name}"


# Methods missing here need an admin key; list admin RPCs with admin_only anyway,
# so a reader sees them.
ROUTER_METHOD_RULES: Mapping[str, AccessRule] = {
    _method("Route"): tenant_at("tenant"),
    _method("RouteStream"): tenant_at("tenant"),
    _method("Feedback"): tenant_at("tenant"),
    _method("Classify"): any_key,
    _method("ReloadClassifier"): admin_only("ReloadClassifier"),
    _method("Health"): service_or_admin("Health"),
    _method("Snapshot"): admin_only("Snapshot"),
    REFLECTION_METHOD: any_key,
}


def load_key_store(security: SecuritySettings, address: str) -> KeyStore | None:
    """Return the key store of ``security``, or None when requests go unchecked.

    Logs a warning when the router serves without authentication.
    """
    if security.api_keys_file is not None:
        keys = KeyStore(security.api_keys_file)
        logger.info(
            "api_keys_loaded",
            extra={"path": str(security.api_keys_file), "keys": len(keys)},
        )
        return keys
    logger.warning(
        "auth_disabled",
        extra={
            "address": address,
            "auth": security.auth,
            "remedy": "set [security] api_keys_file to require API keys",
        },
    )
    return None


class RouterRequestGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Parses, authenticates and authorizes each RPC before the servicer runs.

    With ``client_names`` it first checks the name of the client certificate.
    """

    def __init__(
        self,
        keys: KeyStore | None,
        rules: Mapping[str, AccessRule] = ROUTER_METHOD_RULES,
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

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
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
    ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def guarded(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            request = await self._admit(handler, method, metadata, raw, context)
            return await handler.unary_unary(request, context)

        return guarded

    def _guard_unary_stream(
        self, handler: grpc.RpcMethodHandler, method: str, metadata: Any
    ) -> Callable[[bytes, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        async def guarded(
            raw: bytes, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            request = await self._admit(handler, method, metadata, raw, context)
            async for message in handler.unary_stream(request, context):
                yield message

        return guarded

    def _guard_stream_stream(
        self, handler: grpc.RpcMethodHandler, method: str, metadata: Any
    ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        async def guarded(
            requests: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            try:
                self._check_client_name(method, context)
                self._access.principal(method, metadata)
            except RouterError as error:
                await context.abort(grpc_status_for(error), str(error))
            async for message in handler.stream_stream(requests, context):
                yield message

        return guarded

    async def _admit(
        self,
        handler: grpc.RpcMethodHandler,
        method: str,
        metadata: Any,
        raw: bytes,
        context: grpc.aio.ServicerContext,
    ) -> Any:
        """Return the parsed request, or abort the RPC with the reason."""
        try:
            self._check_client_name(method, context)
            return self._access.admit(
                method, metadata, lambda: parse_request(handler, method, raw)
            )
        except RouterError as error:
            await context.abort(grpc_status_for(error), str(error))
        # context.abort always raises, but grpc does not annotate it as NoReturn.
        raise AssertionError("unreachable")

    def _check_client_name(
        self, method: str, context: grpc.aio.ServicerContext
    ) -> None:
        if self._client_names is None:
            return
        message = self._client_names.rejection(method, context.auth_context())
        if message is not None:
            raise AuthenticationError(message)


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
            "request",
            f"must be a valid {method.rpartition('/')[2]} request message; got "
            "malformed protobuf or invalid UTF-8 in a string field",
            "Build requests with the querygate.router.v1 stubs.",
        ) from None
