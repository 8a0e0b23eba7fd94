"""Single-flight: the helper on its own, then the router with a fake cache."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from router_service.backends import SimulatedBackend, build_backend
from router_service.domain import CacheStatus, RouteQuery
from router_service.errors import ConfigError
from router_service.routing import Router
from router_service.settings import CacheSettings
from router_service.single_flight import SingleFlight, flight_key
from router_service.testing import (
    FakeCache,
    FakeClassifier,
    model_for_tests,
    settings_for_tests,
)

pytestmark = pytest.mark.anyio


class Computation:
    """A computation that counts its calls and blocks until released."""

    def __init__(self, failures: int = 0) -> None:
        self.calls = 0
        self.failures = failures
        self.release = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        call = self.calls
        # A real model call always suspends, even when it is released already.
        await asyncio.sleep(0)
        await self.release.wait()
        if call <= self.failures:
            raise RuntimeError(f"call {call} failed")
        return f"value of call {call}"


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_runs_share_one_computation() -> None:
    flights: SingleFlight[str] = SingleFlight()
    compute = Computation()

    tasks = [
        asyncio.ensure_future(flights.run("key", compute, None)) for _ in range(20)
    ]
    await settle()
    compute.release.set()
    results = await asyncio.gather(*tasks)

    assert compute.calls == 1
    assert {value for value, _ in results} == {"value of call 1"}
    assert [shared for _, shared in results].count(False) == 1
    assert flights.in_flight() == 0


async def test_different_keys_do_not_share() -> None:
    flights: SingleFlight[str] = SingleFlight()
    compute = Computation()
    compute.release.set()

    results = await asyncio.gather(
        flights.run("first", compute, None), flights.run("second", compute, None)
    )

    assert compute.calls == 2
    assert [shared for _, shared in results] == [False, False]


async def test_failed_leader_hands_over_to_follower() -> None:
    flights: SingleFlight[str] = SingleFlight()
    compute = Computation(failures=1)

    leader = asyncio.ensure_future(flights.run("key", compute, None))
    await settle()
    followers = [
        asyncio.ensure_future(flights.run("key", compute, None)) for _ in range(5)
    ]
    await settle()
    compute.release.set()

    with pytest.raises(RuntimeError, match="call 1 failed"):
        await leader
    results = await asyncio.gather(*followers)
    assert compute.calls == 2
    assert {value for value, _ in results} == {"value of call 2"}
    assert [shared for _, shared in results].count(False) == 1
    assert flights.in_flight() == 0


async def test_cancelled_leader_does_not_strand_followers() -> None:
    flights: SingleFlight[str] = SingleFlight()
    compute = Computation()

    leader = asyncio.ensure_future(flights.run("key", compute, None))
    await settle()
    follower = asyncio.ensure_future(flights.run("key", compute, None))
    await settle()
    leader.cancel()
    await settle()
    compute.release.set()

    value, shared = await follower
    assert leader.cancelled()
    assert value == "value of call 2"
    assert not shared


async def test_follower_past_wait_limit_computes_alone() -> None:
    clock = [100.0]
    flights: SingleFlight[str] = SingleFlight(clock=lambda: clock[0])
    blocked = Computation()
    leader = asyncio.ensure_future(flights.run("key", blocked, None))
    await settle()

    alone = Computation()
    alone.release.set()
    value, shared = await flights.run("key", alone, wait_until=100.0)

    assert value == "value of call 1"
    assert not shared
    assert alone.calls == 1
    assert blocked.calls == 1
    blocked.release.set()
    await leader


async def test_follower_stops_waiting_for_hung_leader() -> None:
    flights: SingleFlight[str] = SingleFlight()
    hung = Computation()
    leader = asyncio.ensure_future(flights.run("key", hung, None))
    await settle()

    alone = Computation()
    alone.release.set()
    loop = asyncio.get_running_loop()
    value, shared = await flights.run("key", alone, wait_until=loop.time() + 0.01)

    assert value == "value of call 1"
    assert not shared
    assert not leader.done()
    hung.release.set()
    assert (await leader)[0] == "value of call 1"


def make_router(
    wait_s: float = 30.0, latency_ms: float = 50.0
) -> tuple[Router, FakeCache, SimulatedBackend]:
    model = model_for_tests("only", latency_ms=latency_ms)
    settings = settings_for_tests(
        models={"only": model},
        tiers={tier: ("only",) for tier in ("simple", "medium", "complex")},
        cache=CacheSettings(single_flight_wait_s=wait_s),
    )
    backend = build_backend(model)
    cache = FakeCache()
    router = Router(settings, {"only": backend}, cache)
    router.attach_classifier(FakeClassifier())
    return router, cache, backend  # type: ignore[return-value]


def ask(text: str = "What is DNS?", **fields: object) -> RouteQuery:
    return replace(RouteQuery(query=text, tenant="acme"), **fields)  # type: ignore[arg-type]


async def test_router_shares_one_model_call() -> None:
    router, cache, backend = make_router()

    results = await asyncio.gather(*(router.route(ask()) for _ in range(20)))

    statuses = [result.cache_status for result in results]
    assert backend.calls == 1
    assert len({result.answer for result in results}) == 1
    assert statuses.count(CacheStatus.MISS) == 1
    assert statuses.count(CacheStatus.SHARED) == 19
    assert len(cache.stores) == 1
    assert len({result.request_id for result in results}) == 20


async def test_shared_result_costs_nothing() -> None:
    router, _, _ = make_router()

    results = await asyncio.gather(*(router.route(ask()) for _ in range(2)))

    leader = next(r for r in results if r.cache_status is CacheStatus.MISS)
    follower = next(r for r in results if r.cache_status is CacheStatus.SHARED)
    assert leader.cost_usd > 0
    assert follower.cost_usd == 0.0
    assert follower.input_tokens == 0
    assert follower.output_tokens == 0
    assert follower.baseline_cost_usd == pytest.approx(leader.baseline_cost_usd)
    assert follower.cache_entry_id == leader.cache_entry_id
    assert follower.model == leader.model
    assert follower.tier == leader.tier


async def test_normalized_text_shares_call() -> None:
    router, _, backend = make_router()

    await asyncio.gather(
        router.route(ask("What is DNS?")), router.route(ask("what is dns"))
    )

    assert backend.calls == 1


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(ask("What is DHCP?"), id="other-query"),
        pytest.param(ask(tenant="globex"), id="other-tenant"),
        pytest.param(ask(system_prompt="Answer in French."), id="other-system-prompt"),
        pytest.param(ask(temperature=0.9), id="other-temperature"),
        pytest.param(ask(tier="complex"), id="pinned-tier"),
        pytest.param(ask(skip_cache=True), id="skip-cache"),
    ],
)
async def test_different_request_is_not_shared(other: RouteQuery) -> None:
    router, _, backend = make_router()

    results = await asyncio.gather(router.route(ask()), router.route(other))

    assert backend.calls == 2
    assert CacheStatus.SHARED not in [result.cache_status for result in results]


async def test_zero_wait_turns_sharing_off() -> None:
    router, _, backend = make_router(wait_s=0.0)

    await asyncio.gather(*(router.route(ask()) for _ in range(3)))

    assert backend.calls == 3


def test_flight_key_includes_scope_and_tier() -> None:
    assert flight_key(ask(), "simple") == flight_key(ask("  WHAT is DNS"), "simple")
    assert flight_key(ask(), "simple") != flight_key(ask(), "medium")
    assert flight_key(ask(), "simple") != flight_key(ask(max_tokens=5), "simple")


def test_negative_wait_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"cache\.single_flight_wait_s must be 0"):
        CacheSettings(single_flight_wait_s=-1.0)


def _wait_expired_lines(
    caplog: pytest.LogCaptureFixture, level: int
) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.getMessage() == "single_flight_wait_expired"
        and record.levelno == level
    ]


async def _run_followers_alone(
    flights: SingleFlight[str], count: int, wait_until: float, deadline: float | None
) -> None:
    for _ in range(count):
        alone = Computation()
        alone.release.set()
        await flights.run("key", alone, wait_until, deadline)


async def test_expired_waits_log_one_warning_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [100.0]
    flights: SingleFlight[str] = SingleFlight(
        clock=lambda: clock[0], log_interval_s=60.0
    )
    blocked = Computation()
    leader = asyncio.ensure_future(flights.run("key", blocked, None))
    await settle()

    with caplog.at_level(logging.INFO, logger="router_service.single_flight"):
        await _run_followers_alone(flights, 5, wait_until=100.0, deadline=None)
        first = _wait_expired_lines(caplog, logging.WARNING)
        clock[0] += 60.0
        await _run_followers_alone(flights, 1, wait_until=160.0, deadline=None)
    warnings = _wait_expired_lines(caplog, logging.WARNING)

    assert len(first) == 1
    assert len(warnings) == 2
    assert warnings[0].ended_by == "wait_limit"  # type: ignore[attr-defined]
    assert warnings[1].lines_held_back == 4  # type: ignore[attr-defined]
    blocked.release.set()
    await leader


async def test_wait_ended_by_deadline_logs_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [100.0]
    flights: SingleFlight[str] = SingleFlight(clock=lambda: clock[0])
    blocked = Computation()
    leader = asyncio.ensure_future(flights.run("key", blocked, None))
    await settle()

    with caplog.at_level(logging.INFO, logger="router_service.single_flight"):
        await _run_followers_alone(flights, 5, wait_until=130.0, deadline=100.0)

    assert _wait_expired_lines(caplog, logging.WARNING) == []
    [info] = _wait_expired_lines(caplog, logging.INFO)
    assert info.ended_by == "deadline"  # type: ignore[attr-defined]
    assert info.lines_held_back == 0  # type: ignore[attr-defined]
    blocked.release.set()
    await leader
