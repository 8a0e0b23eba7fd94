"""gRPC servicer of the cache: converts messages to domain values and back."""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import Callable
from typing import TypeVar

import grpc
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service.backup import SnapshotWriter
from cache_service.cache import SemanticCache
from cache_service.entries import HitLayer, LookupQuery, StoreCommand
from cache_service.errors import (
    CacheError,
    InvalidRequestError,
    NotReadyError,
    StorageError,
    status_code_for,
)
from cache_service.feedback import FeedbackCounts, FeedbackRating, FeedbackRecorder
from cache_service.health_checks import CacheHealth
from cache_service.health_report import CheckStatus, health_report_to_proto
from cache_service.rpc_log import loggable_id
from cache_service.rpc_telemetry import annotate_rpc
from cache_service.scope import ChatTurn, Scope

logger = logging.getLogger(__name__)

Response = TypeVar("Response")
LogFields = dict[str, object]

_LAYERS = {
    HitLayer.EXACT: cache_pb2.HIT_LAYER_EXACT,
    HitLayer.SEMANTIC: cache_pb2.HIT_LAYER_SEMANTIC,
}
_CHECK_STATUSES = {
    CheckStatus.OK: cache_pb2.CHECK_STATUS_OK,
    CheckStatus.DEGRADED: cache_pb2.CHECK_STATUS_DEGRADED,
    CheckStatus.FAILING: cache_pb2.CHECK_STATUS_FAILING,
}
_RATINGS = {
    cache_pb2.FEEDBACK_RATING_GOOD: FeedbackRating.GOOD,
    cache_pb2.FEEDBACK_RATING_BAD: FeedbackRating.BAD,
}
# Query hashes in logs are keyed per process, so they correlate log lines of one
# run without letting a reader test guesses of the text offline.
_HASH_KEY = secrets.token_bytes(16)
# Entry ids are SQLite INTEGER keys and FAISS ids, both signed 64-bit.
_MAX_ENTRY_ID = 2**63 - 1
_MAX_ENTRY_ID_DIGITS = len(str(_MAX_ENTRY_ID))


def query_hash(text: str) -> str:
    """Return a short keyed hash of ``text`` for logs."""
    return hashlib.blake2b(
        text.encode("utf-8"), key=_HASH_KEY, digest_size=8
    ).hexdigest()


def scope_from_message(message: cache_pb2.Scope) -> Scope:
    """Convert a proto Scope to the domain Scope."""
    params = message.params
    return Scope(
        tenant=message.tenant,
        model=message.model,
        system_prompt=message.system_prompt,
        conversation=tuple(
            ChatTurn(role=turn.role, content=turn.content)
            for turn in message.conversation
        ),
        temperature=params.temperature if params.HasField("temperature") else None,
        max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
    )


class CacheServicer(cache_pb2_grpc.CacheServiceServicer):
    """Serves the cache RPCs once a cache is attached."""

    def __init__(
        self,
        min_cosine_similarity: float,
        *,
        health: CacheHealth | None = None,
        snapshots: SnapshotWriter | None = None,
    ) -> None:
        self._cache: SemanticCache | None = None
        self._feedback: FeedbackRecorder | None = None
        self._min_cosine_similarity = min_cosine_similarity
        self._health = health or CacheHealth(durable=False)
        self._snapshots = snapshots or SnapshotWriter(None, None)

    def attach(self, cache: SemanticCache) -> None:
        """Start serving from ``cache``. Until then every RPC fails with UNAVAILABLE."""
        # Set the recorder first, because a request that finds the cache uses it.
        self._feedback = FeedbackRecorder(cache)
        self._cache = cache

    def Lookup(
        self, request: cache_pb2.LookupRequest, context: grpc.ServicerContext
    ) -> cache_pb2.LookupResponse:
        def handle(cache: SemanticCache, fields: LogFields) -> cache_pb2.LookupResponse:
            query = LookupQuery(
                query=request.query,
                scope=scope_from_message(request.scope),
                min_similarity=(
                    request.min_similarity
                    if request.HasField("min_similarity")
                    else None
                ),
            )
            fields.update(_query_fields(request.query, query.scope.tenant))
            outcome = cache.lookup(query)
            fields["cache_status"] = (
                f"{outcome.layer.value}_hit" if outcome.layer else "miss"
            )
            fields["similarity"] = round(outcome.similarity, 4)
            response = cache_pb2.LookupResponse(
                hit=outcome.hit, similarity=outcome.similarity
            )
            if outcome.layer is not None and outcome.entry is not None:
                response.layer = _LAYERS[outcome.layer]
                response.entry_id = str(outcome.entry.entry_id)
                response.answer = outcome.entry.answer
                response.metadata.update(outcome.entry.metadata)
                response.age_s = outcome.age_s
            return response

        return self._run("Lookup", context, handle)

    def Store(
        self, request: cache_pb2.StoreRequest, context: grpc.ServicerContext
    ) -> cache_pb2.StoreResponse:
        def handle(cache: SemanticCache, fields: LogFields) -> cache_pb2.StoreResponse:
            command = StoreCommand(
                query=request.query,
                scope=scope_from_message(request.scope),
                answer=request.answer,
                finish_reason=request.finish_reason,
                metadata=dict(request.metadata),
            )
            fields.update(_query_fields(request.query, command.scope.tenant))
            fields["answer_chars"] = len(request.answer)
            # The router sends these three; other callers may not.
            for name in ("tier", "model", "request_id"):
                if name in request.metadata:
                    fields[name] = loggable_id(request.metadata[name])
            outcome = cache.store(command)
            fields["stored"] = outcome.stored
            return cache_pb2.StoreResponse(
                stored=outcome.stored,
                entry_id="" if outcome.entry_id is None else str(outcome.entry_id),
                reason=outcome.reason,
            )

        return self._run("Store", context, handle)

    def Invalidate(
        self, request: cache_pb2.InvalidateRequest, context: grpc.ServicerContext
    ) -> cache_pb2.InvalidateResponse:
        def handle(
            cache: SemanticCache, fields: LogFields
        ) -> cache_pb2.InvalidateResponse:
            removed = _invalidate(cache, request, fields)
            fields["removed"] = removed
            return cache_pb2.InvalidateResponse(removed=removed)

        return self._run("Invalidate", context, handle)

    def Stats(
        self, request: cache_pb2.StatsRequest, context: grpc.ServicerContext
    ) -> cache_pb2.StatsResponse:
        def handle(cache: SemanticCache, fields: LogFields) -> cache_pb2.StatsResponse:
            stats = cache.stats()
            feedback = self._feedback_recorder().counts()
            return cache_pb2.StatsResponse(
                entries=stats.entries,
                exact_hits=stats.exact_hits,
                semantic_hits=stats.semantic_hits,
                misses=stats.misses,
                stores=stats.stores,
                evictions=stats.evictions,
                expirations=stats.expirations,
                index_vectors=stats.index_vectors,
                embedding_model=cache.embedder.model_name,
                embedding_dimension=cache.embedder.dimension,
                min_cosine_similarity=self._min_cosine_similarity,
                feedback_good=feedback.good,
                feedback_bad=feedback.bad,
            )

        return self._run("Stats", context, handle)

    def Feedback(
        self, request: cache_pb2.FeedbackRequest, context: grpc.ServicerContext
    ) -> cache_pb2.FeedbackResponse:
        def handle(
            cache: SemanticCache, fields: LogFields
        ) -> cache_pb2.FeedbackResponse:
            rating = _parse_rating(request.rating)
            entry_id = _parse_entry_id(request.entry_id)
            fields.update(tenant=loggable_id(request.tenant), entry_id=entry_id)
            fields["rating"] = rating.value
            removed = self._feedback_recorder().record(entry_id, request.tenant, rating)
            fields["removed"] = removed
            return cache_pb2.FeedbackResponse(removed=removed)

        return self._run("Feedback", context, handle)

    def Health(
        self, request: cache_pb2.HealthRequest, context: grpc.ServicerContext
    ) -> cache_pb2.HealthReport:
        # Runs without a loaded cache, because it reports what is not loaded.
        return health_report_to_proto(
            self._health.check(),
            cache_pb2.HealthReport,
            cache_pb2.HealthCheck,
            _CHECK_STATUSES,
        )

    def Snapshot(
        self, request: cache_pb2.SnapshotRequest, context: grpc.ServicerContext
    ) -> cache_pb2.SnapshotResponse:
        def handle(
            cache: SemanticCache, fields: LogFields
        ) -> cache_pb2.SnapshotResponse:
            snapshot = self._snapshots.write()
            fields.update(entries=snapshot.entries, size_bytes=snapshot.size_bytes)
            return cache_pb2.SnapshotResponse(
                path=str(snapshot.path),
                entries=snapshot.entries,
                vectors=snapshot.vectors,
                size_bytes=snapshot.size_bytes,
                created_at=snapshot.created_at,
            )

        return self._run("Snapshot", context, handle)

    def feedback_counts(self) -> FeedbackCounts:
        """Return the feedback marks counted since start; zero before loading."""
        if self._feedback is None:
            return FeedbackCounts(good=0, bad=0)
        return self._feedback.counts()

    def _feedback_recorder(self) -> FeedbackRecorder:
        if self._feedback is None:
            raise NotReadyError("the cache service is still loading; retry later")
        return self._feedback

    def _run(
        self,
        method: str,
        context: grpc.ServicerContext,
        handle: Callable[[SemanticCache, LogFields], Response],
    ) -> Response:
        """Run one RPC, map domain errors to statuses and annotate its log line."""
        fields: LogFields = {}
        try:
            if self._cache is None:
                raise NotReadyError(
                    "the cache service is still loading the embedding model and "
                    "index; retry when its health status is SERVING"
                )
            return handle(self._cache, fields)
        except StorageError:
            # Storage messages carry SQLite's text and file paths: log them only.
            code = status_code_for(StorageError())
            error_id = uuid.uuid4().hex[:12]
            fields.update(error="StorageError", error_id=error_id)
            logger.exception("storage_failed", extra={"method": method, **fields})
            context.abort(
                code,
                f"cache store write failed; see the server log for error id {error_id}",
            )
        except CacheError as error:
            code = status_code_for(error)
            fields["error"] = type(error).__name__
            context.abort(code, str(error))
        except Exception:
            code = grpc.StatusCode.INTERNAL
            error_id = uuid.uuid4().hex[:12]
            fields["error_id"] = error_id
            logger.exception("rpc_failed", extra={"method": method, **fields})
            context.abort(
                code, f"internal error {error_id}; the cache service logged the cause"
            )
        finally:
            annotate_rpc(**fields)
        # context.abort always raises, but grpc does not annotate it as NoReturn.
        raise AssertionError("unreachable")


def _query_fields(query: str, tenant: str) -> LogFields:
    return {
        "tenant": loggable_id(tenant),
        "query_chars": len(query),
        "query_hash": query_hash(query),
    }


def _invalidate(
    cache: SemanticCache, request: cache_pb2.InvalidateRequest, fields: LogFields
) -> int:
    """Remove the entries that the request's target names and return their count."""
    target = request.WhichOneof("target")
    fields["target"] = target or "none"
    if request.entry_tenant and target != "entry_id":
        raise InvalidRequestError(
            "entry_tenant is valid only with entry_id. Leave it empty with tenant "
            "or query, which carry their own tenant."
        )
    if target == "entry_id":
        # The request guard fills entry_tenant for tenant keys. It is empty only from
        # a service or admin key, or without auth, and then the tenant is not checked.
        tenant = request.entry_tenant or None
        if tenant is not None:
            fields["tenant"] = loggable_id(tenant)
        return cache.invalidate_entry(_parse_entry_id(request.entry_id), tenant)
    if target == "tenant":
        return cache.invalidate_tenant(request.tenant)
    if target == "query":
        return cache.invalidate_query(
            request.query.query, scope_from_message(request.query.scope)
        )
    raise InvalidRequestError("target must be set: send entry_id, tenant or query.")


def _parse_rating(rating: int) -> FeedbackRating:
    if rating not in _RATINGS:
        raise InvalidRequestError(
            "rating must be FEEDBACK_RATING_GOOD or FEEDBACK_RATING_BAD; got "
            f"{_rating_name(rating)}. Set it to the caller's verdict."
        )
    return _RATINGS[rating]


def _rating_name(rating: int) -> str:
    try:
        return cache_pb2.FeedbackRating.Name(rating)
    except ValueError:
        return str(rating)


def _entry_id_number(raw: str) -> int | None:
    """Return the id written in ``raw``, or None unless it is ASCII digits in int64.

    ``str.isdigit`` alone accepts other scripts' digits, and ``int`` accepts
    spaces and underscores, so neither decides on its own.
    """
    if not (raw.isascii() and raw.isdigit() and len(raw) <= _MAX_ENTRY_ID_DIGITS):
        return None
    number = int(raw)
    return number if number <= _MAX_ENTRY_ID else None


def _parse_entry_id(raw: str) -> int:
    number = _entry_id_number(raw)
    if number is None:
        truncated = raw if len(raw) <= 40 else f"{raw[:40]}..."
        raise InvalidRequestError(
            f"entry_id must be a decimal id as returned by Store or Lookup, "
            f"written with the ASCII digits 0-9 only, at most 2**63 - 1; got "
            f"{truncated!r}."
        )
    return number
