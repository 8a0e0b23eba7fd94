"""The routing domain: cache first, then the classified tier's model chain.

For each request the router looks the query up in the cache. A hit returns
without calling a model or the classifier. On a miss it classifies the query
and calls the tier's models in order, then the models of higher tiers, with retries and
a circuit breaker per model. When every model fails it serves a degraded
answer from the cache at a lower similarity bound, or raises
`NoModelAvailableError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

from router_service.accounting import (
    ModelAnswer,
    result_from_answer,
    result_from_hit,
    result_from_shared,
)
from router_service.backends.base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    ModelBackend,
)
from router_service.bookkeeping import RequestAccounting
from router_service.domain import (
    CacheHit,
    CacheStatus,
    RouteQuery,
    RouteResult,
    SemanticCache,
    check_query_text,
    validate_query,
)
from router_service.errors import (
    CacheUnavailableError,
    CircuitOpenError,
    DeadlineExceededError,
    ModelCallError,
    ModelRefusedError,
    NoModelAvailableError,
    NotReadyError,
    PromptTooLargeError,
)
from router_service.metrics import RouterMetrics
from router_service.prompt_tokens import (
    GgufPromptCounter,
    PromptCounter,
    load_prompt_counter,
)
from router_service.replica_flight import RedisSingleFlight, flight_digest
from router_service.resilience import CircuitBreaker, call_with_retries
from router_service.settings import TIERS, ModelSettings, RouterSettings
from router_service.single_flight import SingleFlight, flight_key

logger = logging.getLogger(__name__)
T = TypeVar("T")
# A miss's answer with its cache entry id, or another replica's stored answer.
MissOutcome = tuple[ModelAnswer, str] | CacheHit


class TierPredictionLike(Protocol):
    """The classifier's output: a tier and one probability per tier."""

    @property
    def tier(self) -> str: ...

    @property
    def probabilities(self) -> Mapping[str, float]: ...


class TierClassifier(Protocol):
    """Interface of the complexity classifier (`classifier.ComplexityClassifier`)."""

    @property
    def version(self) -> str: ...

    def predict(self, query: str) -> TierPredictionLike: ...


def fallback_chain(settings: RouterSettings, tier: str) -> list[tuple[str, str]]:
    """List (tier, model name) pairs to try: the tier's models, then higher tiers'.

    A model that appears in several tiers is listed once, at its first place.
    """
    chain: list[tuple[str, str]] = []
    seen: set[str] = set()
    for candidate_tier in TIERS[TIERS.index(tier) :]:
        for name in settings.tiers[candidate_tier]:
            if name not in seen:
                seen.add(name)
                chain.append((candidate_tier, name))
    return chain


def log_fallback(model: str, tier: str, error: ModelCallError) -> None:
    """Log that `model` failed and the next model in the chain is tried."""
    logger.warning(
        "model_fallback",
        extra={"model": model, "tier": tier, "error": str(error)},
    )


async def count_prompt_tokens(
    counter: PromptCounter, messages: tuple[ChatMessage, ...]
) -> int:
    """Count `messages` with `counter`, in a worker thread for a GGUF tokenizer.

    SmolLM2's tokenizer took 0.6 ms for a 200-character chat and 13 ms for
    16,000 characters (2 shared CPUs under load), too long for the event loop.
    ctypes releases the GIL during each llama.cpp call, so requests keep running.
    """
    if isinstance(counter, GgufPromptCounter):
        return await asyncio.to_thread(counter, messages)
    return counter(messages)


class Router:
    """Routing service: turns a `RouteQuery` into a `RouteResult`.

    The classifier may be attached after start-up, once it is loaded.
    """

    def __init__(
        self,
        settings: RouterSettings,
        backends: Mapping[str, ModelBackend],
        cache: SemanticCache | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        accounting: RequestAccounting | None = None,
        metrics: RouterMetrics | None = None,
        replica_flights: RedisSingleFlight[ModelAnswer, CacheHit] | None = None,
    ) -> None:
        self._settings = settings
        self._backends = backends
        self._cache = cache
        self._clock = clock
        self._classifier: TierClassifier | None = None
        self._accounting = accounting
        self._metrics = metrics
        self._flights: SingleFlight[MissOutcome] = SingleFlight(clock)
        self._replica_flights = replica_flights
        self._prompt_counters: dict[str, PromptCounter] = {
            name: load_prompt_counter(model.tokenizer, f"models.{name}.tokenizer")
            for name, model in settings.models.items()
        }
        resilience = settings.resilience
        self.breakers = {
            name: CircuitBreaker(
                name,
                resilience.breaker_failure_threshold,
                resilience.breaker_cooldown_s,
                resilience.breaker_half_open_max_calls,
                clock=clock,
                on_change=metrics.set_breaker_state if metrics is not None else None,
            )
            for name in settings.models
        }
        if metrics is not None:
            for name, breaker in self.breakers.items():
                metrics.set_breaker_state(name, breaker.state)

    def attach_classifier(self, classifier: TierClassifier) -> None:
        """Use `classifier` from now on; until then unpinned requests are rejected."""
        self._classifier = classifier
        if self._metrics is not None:
            self._metrics.set_classifier_version(classifier.version)

    @property
    def classifier(self) -> TierClassifier:
        """The loaded classifier.

        Raises:
            NotReadyError: the classifier is still loading.
        """
        if self._classifier is None:
            raise NotReadyError(
                "the complexity classifier is still loading; retry in a few seconds"
            )
        return self._classifier

    def classify(self, query: str) -> tuple[TierPredictionLike, str]:
        """Predict the tier of `query` without calling a model.

        Returns the prediction and the version of the classifier that made it,
        read from one classifier even while a reload swaps it.

        Raises:
            InvalidRequestError: the query breaks the rules Route applies to it.
            NotReadyError: the classifier is still loading.
        """
        check_query_text(query, self._settings.max_query_chars)
        classifier = self.classifier
        return classifier.predict(query), classifier.version

    async def route(
        self, query: RouteQuery, deadline: float | None = None
    ) -> RouteResult:
        """Answer `query` from the cache or a model before `deadline` (monotonic s).

        Raises:
            InvalidRequestError: a field of `query` is invalid.
            NotReadyError: the tier is not pinned and the classifier is loading.
            PromptTooLargeError: no candidate model's context window fits.
            ModelRefusedError: a model refused the prompt.
            NoModelAvailableError: every model failed and the cache had nothing.
            DeadlineExceededError: the deadline passed before a model answered.
        """
        started = self._clock()
        validate_query(query, self._settings)
        if self._accounting is not None:
            await self._accounting.admit(query)
        request_id = uuid.uuid4().hex[:16]

        status, hit, tier = await self._lookup_and_classify(query)
        if hit is not None:
            result = result_from_hit(
                self._settings, hit, status, tier, request_id, self._elapsed_ms(started)
            )
            return await self._record(query, result)

        try:
            outcome, shared = await self._answer_miss(
                query, status, tier, deadline, request_id
            )
        except NoModelAvailableError:
            degraded = await self._degraded_result(
                query, status, tier, request_id, started
            )
            if degraded is None:
                raise
            return await self._record(query, degraded)

        elapsed_ms = self._elapsed_ms(started)
        if isinstance(outcome, CacheHit):
            result = result_from_hit(
                self._settings,
                outcome,
                CacheStatus.SHARED,
                tier,
                request_id,
                elapsed_ms,
            )
        elif shared:
            result = result_from_shared(
                self._settings, *outcome, request_id, elapsed_ms
            )
        else:
            result = result_from_answer(
                self._settings, outcome[0], status, outcome[1], request_id, elapsed_ms
            )
        return await self._record(query, result)

    async def _answer_miss(
        self,
        query: RouteQuery,
        status: CacheStatus,
        tier: str,
        deadline: float | None,
        request_id: str,
    ) -> tuple[MissOutcome, bool]:
        """Call the model chain and store the answer, sharing identical calls.

        Returns the answer with its cache entry id ("" when not stored), or
        the cached answer that another replica stored, and whether a
        concurrent identical request of this router made the call. A request
        that bypasses the cache never shares, because its caller asked for a
        fresh answer. Replicas share only after a plain cache miss, because
        otherwise the answer cannot be read back from the cache.
        """

        async def call_and_store() -> tuple[ModelAnswer, str]:
            answer = await self._call_chain(query, tier, deadline)
            return answer, await self._store(query, status, answer, request_id)

        wait_s = self._settings.cache.single_flight_wait_s
        if status is CacheStatus.BYPASSED or wait_s <= 0:
            return await call_and_store(), False
        wait_limit = self._clock() + wait_s
        compute: Callable[[], Awaitable[MissOutcome]] = call_and_store
        replica_flights = self._replica_flights
        if replica_flights is not None and status is CacheStatus.MISS:

            async def share_across_replicas() -> MissOutcome:
                return await replica_flights.run(
                    flight_digest(query, tier),
                    call_and_store,
                    lambda: self._exact_hit(query),
                    wait_limit,
                    deadline,
                )

            compute = share_across_replicas
        return await self._flights.run(
            flight_key(query, tier), compute, wait_limit, deadline
        )

    async def _exact_hit(self, query: RouteQuery) -> CacheHit | None:
        """Return the cache's exact-layer answer to `query`, or None."""
        if self._cache is None:
            return None
        try:
            hit = await self._cache.lookup(query.query, query.cache_scope())
        except CacheUnavailableError:
            return None
        return hit if hit is not None and hit.layer == "exact" else None

    async def _record(self, query: RouteQuery, result: RouteResult) -> RouteResult:
        """Account for a finished request and return its result unchanged."""
        logger.debug(
            "route_decided",
            extra={
                "request_id": result.request_id,
                "tier": result.tier,
                "model": result.model,
                "cache_status": str(result.cache_status),
            },
        )
        if self._accounting is not None:
            await self._accounting.record(query, result)
        return result

    async def _degraded_result(
        self,
        query: RouteQuery,
        status: CacheStatus,
        tier: str,
        request_id: str,
        started: float,
    ) -> RouteResult | None:
        """Look for a cached answer at the degraded similarity bound."""
        hit = await self._degraded_lookup(query, status)
        if hit is None:
            return None
        logger.warning(
            "degraded_answer", extra={"request_id": request_id, "tier": tier}
        )
        return result_from_hit(
            self._settings,
            hit,
            status,
            tier,
            request_id,
            self._elapsed_ms(started),
            degraded=True,
        )

    def _elapsed_ms(self, started: float) -> float:
        return (self._clock() - started) * 1000.0

    async def _lookup_and_classify(
        self, query: RouteQuery
    ) -> tuple[CacheStatus, CacheHit | None, str]:
        if query.skip_cache or self._cache is None:
            status = (
                CacheStatus.BYPASSED if query.skip_cache else CacheStatus.UNAVAILABLE
            )
            return status, None, query.tier or self.classifier.predict(query.query).tier

        try:
            hit = await self._cache.lookup(query.query, query.cache_scope())
        except CacheUnavailableError:
            return CacheStatus.UNAVAILABLE, None, self._tier_of(query)
        if hit is None:
            return CacheStatus.MISS, None, self._tier_of(query)
        status = (
            CacheStatus.EXACT_HIT if hit.layer == "exact" else CacheStatus.SEMANTIC_HIT
        )
        # A hit reports the tier stored with its entry, so the classifier runs
        # only for an entry stored without one.
        stored_tier = hit.metadata.get("tier", "")
        tier = stored_tier if stored_tier in TIERS else self._tier_of(query)
        return status, hit, tier

    def _tier_of(self, query: RouteQuery) -> str:
        """Return the pinned tier of ``query``, or the classifier's prediction."""
        return query.tier or self.classifier.predict(query.query).tier

    async def _fitting_chain(
        self, query: RouteQuery, tier: str
    ) -> list[tuple[str, ModelSettings]]:
        """List the fallback chain's models whose context window fits the prompt.

        Raises:
            PromptTooLargeError: no model in the chain fits.
        """
        messages = query.messages()
        chain = [
            (candidate_tier, self._settings.models[name])
            for candidate_tier, name in fallback_chain(self._settings, tier)
        ]
        counts: dict[PromptCounter, int] = {}
        fitting = []
        for candidate_tier, model in chain:
            counter = self._prompt_counters[model.name]
            if counter not in counts:
                counts[counter] = await count_prompt_tokens(counter, messages)
            if counts[counter] <= model.context_window:
                fitting.append((candidate_tier, model))
        if not fitting:
            limits = ", ".join(
                f"{m.name} (prompt {counts[self._prompt_counters[m.name]]} tokens, "
                f"context window {m.context_window})"
                for _, m in chain
            )
            raise PromptTooLargeError(
                "query",
                "the prompt is longer than the context window of every candidate "
                f"model: {limits}",
                "Shorten the query, system prompt or conversation.",
            )
        return fitting

    def _check_deadline(self, deadline: float | None) -> None:
        if deadline is not None and self._clock() >= deadline:
            raise DeadlineExceededError(
                "the request deadline passed before a model responded; "
                "retry with a longer deadline"
            )

    async def _call_chain(
        self, query: RouteQuery, tier: str, deadline: float | None
    ) -> ModelAnswer:
        messages = query.messages()
        failures: list[str] = []
        for candidate_tier, model in await self._fitting_chain(query, tier):
            self._check_deadline(deadline)
            try:
                return await self._call_model(
                    model, candidate_tier, query, messages, deadline
                )
            except ModelRefusedError:
                raise
            except ModelCallError as error:
                failures.append(f"{model.name}: {type(error).__name__}")
                self._fall_back(model.name, candidate_tier, error)
        raise NoModelAvailableError(
            "every model failed: " + "; ".join(failures) + ". Retry later."
        )

    async def _call_model(
        self,
        model: ModelSettings,
        tier: str,
        query: RouteQuery,
        messages: tuple,
        deadline: float | None,
    ) -> ModelAnswer:
        backend = self._backends[model.name]
        breaker = self.breakers[model.name]
        failed = [0, 0]

        async def attempt(remaining_s: float) -> Completion:
            request = CompletionRequest(
                messages=messages,
                timeout_s=min(model.timeout_s, remaining_s),
                temperature=query.temperature,
                max_tokens=query.max_tokens,
            )
            async with breaker.guard(deadline_clipped=remaining_s < model.timeout_s):
                return await backend.complete(request)

        def count_failed(error: ModelCallError) -> None:
            failed[0] += error.reported_input_tokens
            failed[1] += error.reported_output_tokens

        completion = await call_with_retries(
            self._observed_attempts(model.name, attempt),
            self._settings.resilience,
            deadline,
            clock=self._clock,
            on_failed_attempt=count_failed,
        )
        return ModelAnswer(completion, model, tier, failed[0], failed[1])

    def _fall_back(self, model: str, tier: str, error: ModelCallError) -> None:
        """Log and count that `model` failed and the chain moves on."""
        log_fallback(model, tier, error)
        if self._metrics is not None:
            self._metrics.count_fallback(model)

    def _observed_attempts(
        self, model: str, attempt: Callable[[float], Awaitable[T]]
    ) -> Callable[[float], Awaitable[T]]:
        """Wrap a model call attempt so that each try is counted and timed."""
        metrics = self._metrics
        if metrics is None:
            return attempt
        tries = 0

        async def observed(remaining_s: float) -> T:
            nonlocal tries
            tries += 1
            started = time.perf_counter()
            try:
                result = await attempt(remaining_s)
            except CircuitOpenError:
                metrics.observe_model_attempt(model, "circuit_open", None, tries)
                raise
            except BaseException as error:
                outcome = "error" if isinstance(error, Exception) else "cancelled"
                elapsed = time.perf_counter() - started
                metrics.observe_model_attempt(model, outcome, elapsed, tries)
                raise
            elapsed = time.perf_counter() - started
            metrics.observe_model_attempt(model, "success", elapsed, tries)
            return result

        return observed

    async def _store(
        self,
        query: RouteQuery,
        status: CacheStatus,
        answer: ModelAnswer,
        request_id: str,
    ) -> str:
        completion = answer.completion
        if status is not CacheStatus.MISS or self._cache is None:
            return ""
        # An answer cut off by the token limit or an empty answer is not reusable.
        if completion.finish_reason == "length" or not completion.text.strip():
            return ""
        metadata = {
            "tier": answer.tier,
            "model": answer.model.name,
            "input_tokens": str(completion.input_tokens),
            "output_tokens": str(completion.output_tokens),
            "request_id": request_id,
        }
        try:
            entry_id = await self._cache.store(
                query.query,
                query.cache_scope(),
                completion.text,
                metadata,
                completion.finish_reason,
            )
        except CacheUnavailableError:
            return ""
        return entry_id or ""

    async def _degraded_lookup(
        self, query: RouteQuery, status: CacheStatus
    ) -> CacheHit | None:
        if status is not CacheStatus.MISS or self._cache is None:
            return None
        try:
            return await self._cache.lookup(
                query.query,
                query.cache_scope(),
                min_similarity=self._settings.cache.degraded_min_similarity,
            )
        except CacheUnavailableError:
            return None
