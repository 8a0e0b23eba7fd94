"""Concurrency tests: many clients against one real cache server at once."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import grpc
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service.cache import SemanticCache
from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.entries import LookupQuery, StoreCommand
from cache_service.scope import Scope
from cache_service.testing import FakeEmbedder, settings_for_tests, start_cache_server

TENANTS = ("acme", "globex", "initech")
TOPICS = (
    "reset my password",
    "cancel an order",
    "change the delivery address",
    "get a refund",
    "update billing details",
    "contact support",
    "track a parcel",
    "delete my account",
)
THREADS = 8
OPERATIONS_PER_THREAD = 40


def _question(rng: random.Random) -> str:
    topic = rng.choice(TOPICS)
    return rng.choice([f"How do I {topic}?", f"How can I {topic}?"])


def _topic(text: str) -> str:
    return next(topic for topic in TOPICS if topic in text)


def _answer_for(tenant: str, question: str) -> str:
    return f"{tenant}|{question}"


def _client_worker(
    target: str, seed: int, failures: list[str], served: list[tuple[str, str, str]]
) -> None:
    rng = random.Random(seed)
    with grpc.insecure_channel(target) as channel:
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        for _ in range(OPERATIONS_PER_THREAD):
            tenant = rng.choice(TENANTS)
            scope = cache_pb2.Scope(tenant=tenant, model="auto")
            question = _question(rng)
            action = rng.random()
            try:
                if action < 0.45:
                    response = stub.Lookup(
                        cache_pb2.LookupRequest(query=question, scope=scope)
                    )
                    if response.hit:
                        served.append((tenant, question, response.answer))
                elif action < 0.85:
                    stub.Store(
                        cache_pb2.StoreRequest(
                            query=question,
                            scope=scope,
                            answer=_answer_for(tenant, question),
                            finish_reason="stop",
                        )
                    )
                elif action < 0.93:
                    target_query = cache_pb2.QueryTarget(query=question, scope=scope)
                    stub.Invalidate(cache_pb2.InvalidateRequest(query=target_query))
                elif action < 0.97:
                    stub.Invalidate(cache_pb2.InvalidateRequest(entry_id=str(seed)))
                else:
                    stub.Invalidate(cache_pb2.InvalidateRequest(tenant=tenant))
            except grpc.RpcError as error:
                failures.append(f"{error.code()}: {error.details()}")  # type: ignore[attr-defined]


def _run_threads(worker: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)


def test_many_clients_keep_index_consistent(
    real_embedder: SentenceTransformerEmbedder,
) -> None:
    # A small capacity makes stores evict while other threads look up.
    settings = settings_for_tests(max_entries=6, max_workers=THREADS)
    failures: list[str] = []
    served: list[tuple[str, str, str]] = []
    with start_cache_server(real_embedder, settings) as running:
        _run_threads(
            lambda seed: _client_worker(running.target, seed, failures, served)
        )
        cache = running.wait_until_serving()
        problems = cache.consistency_problems()
        stats = cache.stats()

    assert failures == []
    assert problems == []
    assert stats.entries <= 6
    assert stats.index_vectors == stats.entries
    assert stats.evictions > 0
    assert served, "no lookup hit, so the check below proved nothing"
    # On the real model the "How do I"/"How can I" forms of one topic are
    # paraphrases (cosine about 0.99) and different topics stay below 0.6.
    for tenant, question, answer in served:
        assert answer.startswith(f"{tenant}|"), (tenant, answer)
        assert _topic(answer) == _topic(question), (question, answer)


def test_concurrent_sweeps_and_stores_stay_consistent() -> None:
    embedder = FakeEmbedder()
    now = [1_700_000_000.0]
    cache = SemanticCache(
        settings_for_tests(max_entries=50, exact_ttl_s=5.0, semantic_ttl_s=2.0),
        embedder,
        clock=lambda: now[0],
    )
    stop = threading.Event()

    def sweeper(_: int) -> None:
        while not stop.is_set():
            cache.sweep_expired()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        for number in range(300):
            scope = Scope(tenant=rng.choice(TENANTS))
            query = f"question {rng.randrange(80)}"
            cache.store(
                StoreCommand(query=query, scope=scope, answer="a", finish_reason="stop")
            )
            cache.lookup(LookupQuery(query=query, scope=scope))
            if number % 50 == 0:
                cache.invalidate_tenant(scope.tenant)
            now[0] += 0.01

    sweep_thread = threading.Thread(target=sweeper, args=(0,))
    sweep_thread.start()
    try:
        _run_threads(writer)
    finally:
        stop.set()
        sweep_thread.join(timeout=60)

    assert cache.consistency_problems() == []
    assert cache.stats().entries <= 50
