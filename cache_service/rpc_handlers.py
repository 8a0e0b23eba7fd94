"""Rebuilding a gRPC method handler around a wrapped behaviour, for interceptors.

The auth and telemetry interceptors of both services wrap each RPC's behaviour.
The cache runs grpc's thread-pool server and the router grpc.aio, so their
wrappers differ, but building a handler of the same kind around a wrapper does
not. The router imports this module too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behavior = Callable[..., Any]
Wrap = Callable[[Behavior], Behavior]


def rewrap_handler(
    handler: grpc.RpcMethodHandler,
    *,
    unary_unary: Wrap | None = None,
    unary_stream: Wrap | None = None,
    stream_stream: Wrap | None = None,
    raw_requests: bool = False,
) -> grpc.RpcMethodHandler:
    """Return ``handler`` with its behaviour passed through the wrap for its kind.

    A handler whose kind has no wrap is returned unchanged. With ``raw_requests``,
    the new unary-request handlers get the request bytes, for a wrap that parses
    them itself. Stream-request handlers always keep the deserializer.
    """
    serializer = handler.response_serializer
    deserializer = None if raw_requests else handler.request_deserializer
    if handler.unary_unary is not None and unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary_unary(handler.unary_unary),
            request_deserializer=deserializer,
            response_serializer=serializer,
        )
    if handler.unary_stream is not None and unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            unary_stream(handler.unary_stream),
            request_deserializer=deserializer,
            response_serializer=serializer,
        )
    if handler.stream_stream is not None and stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            stream_stream(handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=serializer,
        )
    return handler
