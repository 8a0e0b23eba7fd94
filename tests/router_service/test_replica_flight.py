"""RedisSingleFlight and the router on a real Redis server, with fake models."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from router_service.accounting import ModelAnswer
from router_service.backends import SimulatedBackend, build_backend
from router_service.domain import CacheHit, CacheStatus, RouteQuery
from router_service.errors import ConfigError
from router_service.replica_flight import KEY_PREFIX, RedisSingleFlight, flight_digest
from router_service.routing import Router
from router_service.settings import CacheSettings, LimitSettings
from router_service.testing import (
    FakeCache,
    FakeClassifier,
    model_for_tests,
    settings_for_tests,
)

pytestmark = pytest.mark.anyio

DIGEST = "0" * 64
KEY = f"{KEY_PREFIX}:{DIGEST}"
# Long enough for every concurrent run to reach Redis before the first ends.
CALL_S = 0.3


class FakeModelCall:
    """Counts calls, takes CALL_S and stores its answer in `cache`."""

    def __init__(self, cache: dict[str, str], failures: int = 0) -> None:
        self.cache = cache
        self.calls = 0
        self.failures = failures

    async def __call__(self) -> tuple[str, str]:
        self.calls += 1
        call = self.calls
        await asyncio.sleep(CALL_S)
        if call <= self.failures:
            raise RuntimeError("model failed")
        self.cache["entry"] = f"answer {call}"
        return f"answer {call}", "entry"


def reader(cache: dict[str, str]):  # type: ignore[no-untyped-def]
    async def read_stored() -> str | None:
        answer = cache.get("entry")
        return None if answer is None else f"stored {answer}"

    return read_stored


@pytest.fixture
async def flights(redis_uri: str) -> AsyncIterator[list[RedisSingleFlight[str, str]]]:
    """Two coordinators on one Redis server, as two router replicas hold them."""
    replicas: list[RedisSingleFlight[str, str]] = [
        RedisSingleFlight.from_uri(redis_uri, key_check_interval_s=0.1)
        for _ in range(2)
    ]
    yield replicas
    for replica in replicas:
        await replica.aclose()


def far_future() -> float:
    return time.monotonic() + 30.0


async def test_two_replicas_share_one_call(
    flights: list[RedisSingleFlight[str, str]],
) -> None:
    cache: dict[str, str] = {}
    model = FakeModelCall(cache)

    results = await asyncio.gather(
        *(
            flights[i % 2].run(DIGEST, model, reader(cache), far_future())
            for i in range(2)
        )
    )

    assert model.calls == 1
    assert ("answer 1", "entry") in results
    assert "stored answer 1" in results


async def test_stored_outcome_serves_late_arrival(
    flights: list[RedisSingleFlight[str, str]], redis_uri: str
) -> None:
    cache: dict[str, str] = {}
    model = FakeModelCall(cache)
    await flights[0].run(DIGEST, model, reader(cache), far_future())

    late = await flights[1].run(DIGEST, model, reader(cache), far_future())

    client = redis.asyncio.Redis.from_url(redis_uri, decode_responses=True)
    assert await client.get(KEY) == "stored:entry"
    await client.aclose()
    assert model.calls == 1
    assert late == "stored answer 1"


async def test_failed_leader_hands_call_to_follower(
    flights: list[RedisSingleFlight[str, str]],
) -> None:
    cache: dict[str, str] = {}
    model = FakeModelCall(cache, failures=1)

    results = await asyncio.gather(
        *(
            flights[i % 2].run(DIGEST, model, reader(cache), far_future())
            for i in range(2)
        ),
        return_exceptions=True,
    )

    failures = [r for r in results if isinstance(r, RuntimeError)]
    assert model.calls == 2
    assert len(failures) == 1
    assert ("answer 2", "entry") in results


async def test_unstored_answer_lets_follower_call(
    flights: list[RedisSingleFlight[str, str]],
) -> None:
    calls = 0

    async def unstored() -> tuple[str, str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(CALL_S)
        return "cut off", ""

    async def nothing() -> str | None:
        return None

    results = await asyncio.gather(
        *(flights[i % 2].run(DIGEST, unstored, nothing, far_future()) for i in range(2))
    )

    assert calls == 2
    assert results == [("cut off", ""), ("cut off", "")]


async def test_follower_calls_itself_at_wait_limit(
    flights: list[RedisSingleFlight[str, str]], redis_uri: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_uri)
    # A lease that no leader renews or finishes, as a hung leader leaves it.
    await client.set(KEY, "lead:hung", px=60_000)
    await client.aclose()
    cache: dict[str, str] = {}
    model = FakeModelCall(cache)

    result = await flights[0].run(DIGEST, model, reader(cache), time.monotonic() + 0.5)

    assert model.calls == 1
    assert result == ("answer 1", "entry")


async def test_deadline_ended_waits_log_one_info(
    flights: list[RedisSingleFlight[str, str]],
    redis_uri: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = redis.asyncio.Redis.from_url(redis_uri)
    await client.set(KEY, "lead:hung", px=60_000)
    await client.aclose()
    cache: dict[str, str] = {}
    model = FakeModelCall(cache)

    with caplog.at_level(logging.INFO, logger="router_service.single_flight"):
        for _ in range(3):
            deadline = time.monotonic() + 0.2
            await flights[0].run(DIGEST, model, reader(cache), far_future(), deadline)
    lines = [
        r for r in caplog.records if r.getMessage() == "single_flight_wait_expired"
    ]

    assert model.calls == 3
    [line] = lines
    assert line.levelno == logging.INFO
    assert line.ended_by == "deadline"  # type: ignore[attr-defined]
    assert line.flight == "replicas"  # type: ignore[attr-defined]


async def test_expired_lease_is_taken_over(
    flights: list[RedisSingleFlight[str, str]], redis_uri: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_uri, decode_responses=True)
    # The lease of a replica that crashed mid-call expires without an outcome.
    await client.set(KEY, "lead:crashed", px=300)
    cache: dict[str, str] = {}
    model = FakeModelCall(cache)

    result = await flights[0].run(DIGEST, model, reader(cache), far_future())

    assert model.calls == 1
    assert result == ("answer 1", "entry")
    assert await client.get(KEY) == "stored:entry"
    await client.aclose()


async def test_leader_renews_lease(redis_uri: str) -> None:
    flight: RedisSingleFlight[str, str] = RedisSingleFlight.from_uri(
        redis_uri, lease_s=0.3
    )
    client = redis.asyncio.Redis.from_url(redis_uri, decode_responses=True)
    lease_values: list[object] = []

    async def long_call() -> tuple[str, str]:
        for _ in range(5):
            await asyncio.sleep(0.2)
            lease_values.append(await client.get(KEY))
        return "done", ""

    await flight.run(DIGEST, long_call, reader({}), far_future())

    assert all(isinstance(v, str) and v.startswith("lead:") for v in lease_values)
    assert await client.get(KEY) is None
    await client.aclose()
    await flight.aclose()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_redis_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flight: RedisSingleFlight[str, str] = RedisSingleFlight.from_uri(
        f"redis://127.0.0.1:{closed_port()}", retry_after_s=0.0
    )
    cache: dict[str, str] = {}
    model = FakeModelCall(cache)

    with caplog.at_level(logging.WARNING, logger="router_service.replica_flight"):
        results = [
            await flight.run(DIGEST, model, reader(cache), far_future())
            for _ in range(3)
        ]

    warnings = [r for r in caplog.records if r.msg == "single_flight_redis_unavailable"]
    assert model.calls == 3
    assert results[-1] == ("answer 3", "entry")
    assert len(warnings) == 1
    assert "ConnectionError" in warnings[0].error  # type: ignore[attr-defined]
    await flight.aclose()


def test_digest_hides_normalized_text() -> None:
    first = flight_digest(RouteQuery(query="What is  Redis?", tenant="acme"), "simple")
    second = flight_digest(RouteQuery(query="what is redis", tenant="acme"), "simple")

    assert first == second
    assert "redis" not in first.lower()
    assert len(first) == 64


@pytest.mark.parametrize(
    "other",
    [
        RouteQuery(query="What is Redis?", tenant="globex"),
        RouteQuery(query="What is Redis?", tenant="acme", system_prompt="Be brief."),
        RouteQuery(query="What is Redis?", tenant="acme", temperature=0.5),
    ],
    ids=["tenant", "system_prompt", "temperature"],
)
def test_digest_differs_by_scope(other: RouteQuery) -> None:
    base = flight_digest(RouteQuery(query="What is Redis?", tenant="acme"), "simple")

    assert flight_digest(other, "simple") != base


def test_digest_differs_by_tier() -> None:
    query = RouteQuery(query="What is Redis?", tenant="acme")

    assert flight_digest(query, "simple") != flight_digest(query, "complex")


@pytest.mark.parametrize(
    ("own", "limits_uri", "expected"),
    [
        ("", "memory://", ""),
        ("", "redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("memory://", "redis://127.0.0.1:6379", ""),
        ("rediss://cache:6380/1", "memory://", "rediss://cache:6380/1"),
    ],
    ids=["memory-limits", "redis-limits", "memory-override", "own-uri"],
)
def test_redis_uri_defaults_to_limits_storage(
    own: str, limits_uri: str, expected: str
) -> None:
    settings = settings_for_tests(
        cache=CacheSettings(single_flight_redis_uri=own),
        limits=LimitSettings(storage_uri=limits_uri),
    )

    assert settings.single_flight_redis_uri() == expected


def test_zero_wait_turns_replica_sharing_off() -> None:
    settings = settings_for_tests(
        cache=CacheSettings(
            single_flight_redis_uri="redis://127.0.0.1:6379", single_flight_wait_s=0
        )
    )

    assert settings.single_flight_redis_uri() == ""


def test_redis_uri_scheme_is_validated() -> None:
    with pytest.raises(
        ConfigError,
        match=r"cache.single_flight_redis_uri must be empty or start with memory://",
    ):
        CacheSettings(single_flight_redis_uri="http://127.0.0.1:6379")


def test_invalid_port_message_hides_password() -> None:
    with pytest.raises(ConfigError, match=r"port number") as raised:
        CacheSettings(single_flight_redis_uri="redis://:s3cret@127.0.0.1:99999")

    assert "s3cret" not in str(raised.value)
    assert "redis://:***@127.0.0.1:99999" in str(raised.value)


def make_replica(
    cache: FakeCache, flight: RedisSingleFlight[ModelAnswer, CacheHit]
) -> tuple[Router, SimulatedBackend]:
    """A router with its own simulator model, sharing `cache` and `flight`'s Redis."""
    model = model_for_tests("only", latency_ms=CALL_S * 1000)
    settings = settings_for_tests(
        models={"only": model},
        tiers={tier: ("only",) for tier in ("simple", "medium", "complex")},
    )
    backend = build_backend(model)
    router = Router(settings, {"only": backend}, cache, replica_flights=flight)
    router.attach_classifier(FakeClassifier())
    return router, backend  # type: ignore[return-value]


async def test_routers_share_call_through_redis(redis_uri: str) -> None:
    cache = FakeCache()
    flights: list[RedisSingleFlight[ModelAnswer, CacheHit]] = [
        RedisSingleFlight.from_uri(redis_uri) for _ in range(2)
    ]
    replicas = [make_replica(cache, flight) for flight in flights]
    query = RouteQuery(query="What is DNS?", tenant="acme")

    results = await asyncio.gather(
        *(replicas[i % 2][0].route(query) for i in range(10))
    )

    statuses = [result.cache_status for result in results]
    assert sum(backend.calls for _, backend in replicas) == 1
    assert statuses.count(CacheStatus.MISS) == 1
    assert statuses.count(CacheStatus.SHARED) == 9
    assert len({result.answer for result in results}) == 1
    assert len(cache.stores) == 1
    for flight in flights:
        await flight.aclose()


async def test_unavailable_cache_skips_redis(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = FakeCache(available=False)
    flight: RedisSingleFlight[ModelAnswer, CacheHit] = RedisSingleFlight.from_uri(
        f"redis://127.0.0.1:{closed_port()}"
    )
    router, backend = make_replica(cache, flight)
    query = RouteQuery(query="What is DNS?", tenant="acme")

    with caplog.at_level(logging.WARNING, logger="router_service.replica_flight"):
        results = await asyncio.gather(*(router.route(query) for _ in range(3)))

    # The answer cannot be read back from the cache, so only this router shares.
    statuses = [result.cache_status for result in results]
    assert statuses.count(CacheStatus.UNAVAILABLE) == 1
    assert statuses.count(CacheStatus.SHARED) == 2
    assert backend.calls == 1
    assert not [r for r in caplog.records if r.name == "router_service.replica_flight"]
    await flight.aclose()
