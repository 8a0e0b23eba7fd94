"""Thin gRPC servicer: request proto -> domain value -> one domain call -> proto."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from querygate.router.v1 import router_pb2, router_pb2_grpc

from cache_service.health_report import CheckStatus, health_report_to_proto
from cache_service.rpc_log import loggable_id
from router_service.backends.base import ChatMessage
from router_service.classifier_reload import ClassifierReloader
from router_service.domain import CacheStatus, FeedbackRating, RouteQuery, RouteResult
from router_service.errors import RateLimitedError, RouterError, grpc_status_for
from router_service.feedback import AnswerFeedback, FeedbackMark
from router_service.health_checks import RouterHealth
from router_service.ledger_backup import LedgerSnapshotWriter
from router_service.rpc_telemetry import annotate_rpc
from router_service.streaming import StreamingRouter

logger = logging.getLogger(__name__)
T = TypeVar("T")

TIER_TO_PROTO = {
    "simple": router_pb2.TIER_SIMPLE,
    "medium": router_pb2.TIER_MEDIUM,
    "complex": router_pb2.TIER_COMPLEX,
}
PROTO_TO_TIER = {value: key for key, value in TIER_TO_PROTO.items()}
CACHE_STATUS_TO_PROTO = {
    CacheStatus.MISS: router_pb2.CACHE_STATUS_MISS,
    CacheStatus.EXACT_HIT: router_pb2.CACHE_STATUS_EXACT_HIT,
    CacheStatus.SEMANTIC_HIT: router_pb2.CACHE_STATUS_SEMANTIC_HIT,
    CacheStatus.BYPASSED: router_pb2.CACHE_STATUS_BYPASSED,
    CacheStatus.UNAVAILABLE: router_pb2.CACHE_STATUS_UNAVAILABLE,
    CacheStatus.SHARED: router_pb2.CACHE_STATUS_SHARED,
}
PROTO_TO_CACHE_STATUS = {value: key for key, value in CACHE_STATUS_TO_PROTO.items()}
_CHECK_STATUSES = {
    CheckStatus.OK: router_pb2.CHECK_STATUS_OK,
    CheckStatus.DEGRADED: router_pb2.CHECK_STATUS_DEGRADED,
    CheckStatus.FAILING: router_pb2.CHECK_STATUS_FAILING,
}
PROTO_TO_RATING = {
    router_pb2.FEEDBACK_RATING_GOOD: FeedbackRating.GOOD,
    router_pb2.FEEDBACK_RATING_BAD: FeedbackRating.BAD,
}
# Respond a little before the caller's deadline so the reply can still arrive.
DEADLINE_MARGIN_S = 0.05


def query_from_proto(request: router_pb2.RouteRequest) -> RouteQuery:
    """Convert a RouteRequest to the domain's RouteQuery."""
    tier = None
    if request.tier != router_pb2.TIER_UNSPECIFIED:
        tier = PROTO_TO_TIER.get(request.tier, f"unknown tier {request.tier}")
    return RouteQuery(
        query=request.query,
        tenant=request.tenant,
        user=request.user,
        system_prompt=request.system_prompt,
        conversation=tuple(
            ChatMessage(turn.role, turn.content) for turn in request.conversation
        ),
        temperature=request.temperature if request.HasField("temperature") else None,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        tier=tier,
        skip_cache=request.skip_cache,
    )


def mark_from_proto(request: router_pb2.FeedbackRequest) -> FeedbackMark:
    """Convert a FeedbackRequest to the domain's FeedbackMark."""
    target = request.WhichOneof("target")
    return FeedbackMark(
        tenant=request.tenant,
        rating=PROTO_TO_RATING.get(request.rating),
        request_id=request.request_id if target == "request_id" else "",
        cache_entry_id=request.cache_entry_id if target == "cache_entry_id" else "",
    )


def result_to_proto(result: RouteResult) -> router_pb2.RouteResponse:
    """Convert a RouteResult to the RouteResponse message."""
    return router_pb2.RouteResponse(
        answer=result.answer,
        tier=TIER_TO_PROTO[result.tier],
        model=result.model,
        cache_status=CACHE_STATUS_TO_PROTO[result.cache_status],
        similarity=result.similarity,
        usage=router_pb2.Usage(
            input_tokens=result.input_tokens, output_tokens=result.output_tokens
        ),
        cost_usd=result.cost_usd,
        latency_ms=result.latency_ms,
        request_id=result.request_id,
        finish_reason=result.finish_reason,
        cache_entry_id=result.cache_entry_id,
        baseline_cost_usd=result.baseline_cost_usd,
        degraded=result.degraded,
    )


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + max(0.0, remaining - DEADLINE_MARGIN_S)


def _rate_limited_status(error: RateLimitedError) -> grpc.Status:
    retry = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(nanos=0, seconds=0)
    )
    retry.retry_delay.FromNanoseconds(int(error.retry_after_s * 1e9))
    detail = any_pb2.Any()
    detail.Pack(retry)
    status = status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED, message=str(error), details=[detail]
    )
    return rpc_status.to_status(status)


def _failure_status(
    method: str, error: Exception
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...]]:
    """Return the code, details and trailing metadata to abort with for `error`.

    An error outside the domain tree becomes INTERNAL with a short id, and its
    traceback is logged once with that id.
    """
    if isinstance(error, RateLimitedError):
        status = _rate_limited_status(error)
        return status.code, status.details, status.trailing_metadata
    if isinstance(error, RouterError):
        return grpc_status_for(error), str(error), ()
    error_id = uuid.uuid4().hex[:8]
    annotate_rpc(error_id=error_id)
    logger.exception("rpc_failed", extra={"method": method, "error_id": error_id})
    return grpc.StatusCode.INTERNAL, f"internal error, id {error_id}", ()


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """Exposes `Router` over gRPC and maps domain errors through the error table."""

    def __init__(
        self,
        router: StreamingRouter,
        feedback: AnswerFeedback,
        reloader: ClassifierReloader,
        *,
        health: RouterHealth,
        snapshots: LedgerSnapshotWriter,
    ) -> None:
        self._router = router
        self._feedback = feedback
        self._reloader = reloader
        self._health = health
        self._snapshots = snapshots

    async def _handle(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        call: Callable[[], Awaitable[T]],
        log_fields: Callable[[T], dict[str, object]],
    ) -> T:
        try:
            result = await call()
            annotate_rpc(**log_fields(result))
            return result
        except Exception as error:
            code, details, metadata = _failure_status(method, error)
            await context.abort(code, details, metadata)
        raise AssertionError("unreachable: context.abort raises")

    async def Route(
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RouteResponse:
        annotate_rpc(tenant=loggable_id(request.tenant))

        async def call() -> router_pb2.RouteResponse:
            query = query_from_proto(request)
            result = await self._router.route(query, _deadline(context))
            return result_to_proto(result)

        return await self._handle("Route", context, call, _route_log_fields)

    async def Classify(
        self, request: router_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.ClassifyResponse:
        async def call() -> router_pb2.ClassifyResponse:
            prediction, version = self._router.classify(request.query)
            return router_pb2.ClassifyResponse(
                tier=TIER_TO_PROTO[prediction.tier],
                probabilities=[
                    router_pb2.TierProbability(
                        tier=TIER_TO_PROTO[tier], probability=probability
                    )
                    for tier, probability in prediction.probabilities.items()
                ],
                classifier_version=version,
            )

        def fields(response: router_pb2.ClassifyResponse) -> dict[str, object]:
            return {"tier": PROTO_TO_TIER.get(response.tier)}

        return await self._handle("Classify", context, call, fields)

    async def RouteStream(
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.RouteStreamEvent]:
        annotate_rpc(tenant=loggable_id(request.tenant))
        try:
            query = query_from_proto(request)
            events = self._router.route_stream(query, _deadline(context))
            async for event in events:
                if isinstance(event, str):
                    yield router_pb2.RouteStreamEvent(delta=event)
                else:
                    summary = result_to_proto(event)
                    annotate_rpc(**_route_log_fields(summary))
                    yield router_pb2.RouteStreamEvent(summary=summary)
        except Exception as error:
            code, details, metadata = _failure_status("RouteStream", error)
            await context.abort(code, details, metadata)

    async def Feedback(
        self, request: router_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.FeedbackResponse:
        annotate_rpc(tenant=loggable_id(request.tenant))

        async def call() -> router_pb2.FeedbackResponse:
            result = await self._feedback.mark(mark_from_proto(request))
            return router_pb2.FeedbackResponse(
                cache_entry_id=result.cache_entry_id, removed=result.removed
            )

        def fields(response: router_pb2.FeedbackResponse) -> dict[str, object]:
            return {
                "rating": router_pb2.FeedbackRating.Name(request.rating),
                "cache_entry_id": response.cache_entry_id,
                "removed": response.removed,
            }

        return await self._handle("Feedback", context, call, fields)

    # The request guard (router_service.auth) lets only admin keys reach this
    # when the router checks API keys.
    async def ReloadClassifier(
        self,
        request: router_pb2.ReloadClassifierRequest,
        context: grpc.aio.ServicerContext,
    ) -> router_pb2.ReloadClassifierResponse:
        async def call() -> router_pb2.ReloadClassifierResponse:
            result = await self._reloader.reload(request.artifact_dir)
            return router_pb2.ReloadClassifierResponse(
                classifier_version=result.version,
                previous_classifier_version=result.previous_version,
            )

        def fields(response: router_pb2.ReloadClassifierResponse) -> dict[str, object]:
            return {
                "version": response.classifier_version,
                "previous_version": response.previous_classifier_version,
            }

        return await self._handle("ReloadClassifier", context, call, fields)

    async def Health(
        self, request: router_pb2.HealthRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.HealthReport:
        async def call() -> router_pb2.HealthReport:
            return health_report_to_proto(
                await self._health.check(),
                router_pb2.HealthReport,
                router_pb2.HealthCheck,
                _CHECK_STATUSES,
            )

        def fields(response: router_pb2.HealthReport) -> dict[str, object]:
            return {"serving": response.serving}

        return await self._handle("Health", context, call, fields)

    async def Snapshot(
        self, request: router_pb2.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.SnapshotResponse:
        async def call() -> router_pb2.SnapshotResponse:
            snapshot = await asyncio.to_thread(self._snapshots.write)
            return router_pb2.SnapshotResponse(
                path=str(snapshot.path),
                requests=snapshot.requests,
                size_bytes=snapshot.size_bytes,
                created_at=snapshot.created_at,
            )

        def fields(response: router_pb2.SnapshotResponse) -> dict[str, object]:
            return {"requests": response.requests, "size_bytes": response.size_bytes}

        return await self._handle("Snapshot", context, call, fields)


def _route_log_fields(response: router_pb2.RouteResponse) -> dict[str, object]:
    return {
        "request_id": response.request_id,
        "tier": PROTO_TO_TIER.get(response.tier),
        "model": response.model,
        "cache_status": str(PROTO_TO_CACHE_STATUS[response.cache_status]),
        "input_tokens": response.usage.input_tokens,
        "output_tokens": response.usage.output_tokens,
        "cost_usd": response.cost_usd,
    }
