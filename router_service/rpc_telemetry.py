"""One log line and one set of metrics per RPC, from a grpc.aio server interceptor.

The interceptor wraps every RPC of the router service (not health or reflection),
so RPCs that end before the servicer runs are counted and logged too. Servicers add
their fields (tenant, tier, cache status, error id) with `annotate_rpc`, which
writes to a per-RPC context variable that the interceptor reads when the RPC ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from cache_service.rpc_handlers import rewrap_handler
from cache_service.rpc_log import rpc_completed_fields, status_code_name
from router_service.metrics import RouterMetrics

logger = logging.getLogger(__name__)

_rpc_fields: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "querygate_router_rpc_fields", default=None
)


def annotate_rpc(**fields: object) -> None:
    """Add fields to the current RPC's log line; does nothing outside an RPC."""
    current = _rpc_fields.get()
    if current is not None:
        current.update(fields)


def _status_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    return status_code_name(context.code(), error)


class RpcTelemetryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts, times and logs each RPC of the service named `service_name`."""

    def __init__(self, metrics: RouterMetrics, service_name: str) -> None:
        self._metrics = metrics
        self._prefix = f"/{service_name}/"

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        full_method: str = handler_call_details.method
        if handler is None or not full_method.startswith(self._prefix):
            return handler
        method = full_method.removeprefix(self._prefix)
        return rewrap_handler(
            handler,
            unary_unary=lambda behavior: self._wrap_unary(method, behavior),
            unary_stream=lambda behavior: self._wrap_stream(method, behavior),
        )

    def _wrap_unary(
        self, method: str, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            fields: dict[str, object] = {}
            token = _rpc_fields.set(fields)
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as raised:
                error = raised
                raise
            finally:
                _rpc_fields.reset(token)
                self._finish(method, context, error, started, fields)

        return observed

    def _wrap_stream(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def observed(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            fields: dict[str, object] = {}
            token = _rpc_fields.set(fields)
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                async for message in behavior(request, context):
                    yield message
            except BaseException as raised:
                error = raised
                raise
            finally:
                _rpc_fields.reset(token)
                self._finish(method, context, error, started, fields)

        return observed

    def _finish(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        error: BaseException | None,
        started: float,
        fields: dict[str, object],
    ) -> None:
        duration_s = time.perf_counter() - started
        code = _status_code(context, error)
        self._metrics.observe_rpc(method, code, duration_s)
        logger.info(
            "rpc_completed",
            extra=rpc_completed_fields(method, code, duration_s, fields),
        )
