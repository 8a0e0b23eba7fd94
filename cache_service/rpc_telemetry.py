"""One log line and one set of metrics per RPC, from a gRPC server interceptor.

The interceptor wraps every RPC of the cache service (not health or reflection),
so RPCs that end before the servicer runs are counted and logged too. The servicer
adds its fields (tenant, cache status, error id) with `annotate_rpc`, which writes
to a per-RPC context variable. The sync server runs the servicer in the thread
that runs the interceptor's wrapper, so the variable reaches it.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from cache_service.metrics import CacheMetrics
from cache_service.rpc_handlers import rewrap_handler
from cache_service.rpc_log import rpc_completed_fields, status_code_name

logger = logging.getLogger(__name__)

_rpc_fields: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "querygate_cache_rpc_fields", default=None
)


def annotate_rpc(**fields: object) -> None:
    """Add fields to the current RPC's log line; does nothing outside an RPC."""
    current = _rpc_fields.get()
    if current is not None:
        current.update(fields)


def _status_code(context: grpc.ServicerContext, error: BaseException | None) -> str:
    if isinstance(error, GeneratorExit):
        # The server closes a response stream early only when the call ended.
        return grpc.StatusCode.CANCELLED.name
    return status_code_name(context.code(), error)


class RpcTelemetryInterceptor(grpc.ServerInterceptor):
    """Counts, times and logs each RPC of the service named `service_name`."""

    def __init__(self, metrics: CacheMetrics, service_name: str) -> None:
        self._metrics = metrics
        self._prefix = f"/{service_name}/"

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = continuation(handler_call_details)
        full_method: str = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or not full_method.startswith(self._prefix):
            return handler
        method = full_method.removeprefix(self._prefix)
        return rewrap_handler(
            handler,
            unary_unary=lambda behavior: self._wrap_unary(method, behavior),
            unary_stream=lambda behavior: self._wrap_stream(method, behavior),
        )

    def _wrap_unary(
        self, method: str, behavior: Callable[..., Any]
    ) -> Callable[..., Any]:
        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            fields: dict[str, object] = {}
            token = _rpc_fields.set(fields)
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                return behavior(request, context)
            except BaseException as raised:
                error = raised
                raise
            finally:
                _rpc_fields.reset(token)
                self._finish(method, context, error, started, fields)

        return observed

    def _wrap_stream(
        self, method: str, behavior: Callable[..., Iterator[Any]]
    ) -> Callable[..., Iterator[Any]]:
        def observed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            fields: dict[str, object] = {}
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                # The server pulls each message in a fresh call, so the variable
                # is set around each step of the servicer's generator.
                messages = behavior(request, context)
                while True:
                    token = _rpc_fields.set(fields)
                    try:
                        message = next(messages)
                    except StopIteration:
                        return
                    finally:
                        _rpc_fields.reset(token)
                    yield message
            except BaseException as raised:
                error = raised
                raise
            finally:
                self._finish(method, context, error, started, fields)

        return observed

    def _finish(
        self,
        method: str,
        context: grpc.ServicerContext,
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
