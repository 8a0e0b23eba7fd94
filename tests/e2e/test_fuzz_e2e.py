"""Fuzz both real servers with random, malformed and oversized requests.

The cache runs with all-MiniLM-L6-v2 and FAISS, the router with the committed
classifier and simulator models, both on port 0 in this process. Every response
must be OK or a defined error status, never INTERNAL or UNKNOWN, and both
servers must stay SERVING. The last test replays one adversarial batch several
times and bounds the growth of this process's resident memory, which contains both
servers and the client.

Protobuf refuses to encode lone surrogates, so invalid UTF-8 (a surrogate in
UTF-8 form, or stray continuation bytes) is sent as raw wire bytes.
"""

from __future__ import annotations

import asyncio
import gc
import math
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e_servers import router_settings, start_router
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc

from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.server import RunningServer as CacheServer
from cache_service.testing import start_cache_server
from router_service.server import RunningServer as RouterServer

# Statuses that a request may end with. INTERNAL and UNKNOWN mean a crash.
CACHE_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
}
# The router adds FAILED_PRECONDITION for a model's content-filter refusal.
ROUTER_CODES = CACHE_CODES | {grpc.StatusCode.FAILED_PRECONDITION}
CALL_TIMEOUT_S = 60.0
# Bound on the growth of resident memory from the second to the last round of the
# same batch. Each round sends 12 requests of 4 MB, so a leak of them would add
# about 48 MB per round. Between rounds the allocator's free lists vary by tens of
# MB, and the first round warms them up.
MAX_RSS_GROWTH_MB = 64.0
MEMORY_ROUNDS = 8
FUZZ_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# --- servers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_server(
    real_embedder: SentenceTransformerEmbedder,
) -> Iterator[CacheServer]:
    with start_cache_server(real_embedder) as running:
        yield running


@contextmanager
def _router_in_thread(cache_target: str, classifier: object) -> Iterator[RouterServer]:
    """Run the router on its own event loop, so the test can call it synchronously."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-router", daemon=True)
    thread.start()
    settings_ = router_settings(cache_target)
    start = start_router(settings_, classifier)
    running = asyncio.run_coroutine_threadsafe(start, loop).result(60)
    try:
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(grace_s=1), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def router_server(
    cache_server: CacheServer, real_classifier: object
) -> Iterator[RouterServer]:
    with _router_in_thread(cache_server.target, real_classifier) as running:
        yield running


@pytest.fixture(scope="module")
def cache_channel(cache_server: CacheServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(cache_server.target) as channel:
        yield channel


@pytest.fixture(scope="module")
def router_channel(router_server: RouterServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(router_server.target) as channel:
        yield channel


# --- strategies --------------------------------------------------------------

CONTROL_CHARACTERS = st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Co"])
HUGE_LENGTHS = st.sampled_from([16_001, 100_001, 1_000_000])


def _mostly(
    valid: st.SearchStrategy[Any], *hostile: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """Draw ``valid`` 7 times in 8, so that many requests pass every check and
    reach the model, the cache and the store, while each field is still hostile
    in about every eighth request."""
    hostile_values = st.one_of(*hostile)
    # one_of would pick each branch equally often, whatever the list repeats.
    return st.sampled_from([True] * 7 + [False]).flatmap(
        lambda pick_valid: valid if pick_valid else hostile_values
    )


plain_texts = st.text(
    alphabet=st.characters(categories=["L", "N", "P", "Zs"]), min_size=1, max_size=40
)
texts = _mostly(
    plain_texts,
    st.just(""),
    st.text(max_size=40),
    st.text(alphabet=CONTROL_CHARACTERS, max_size=40),
    st.builds(
        lambda unit, count: unit * count,
        st.sampled_from(["a", " ", "\x00", "é", "\U0001f600", "\u202e"]),
        HUGE_LENGTHS,
    ),
)
short_texts = st.one_of(st.text(max_size=12), st.text(CONTROL_CHARACTERS, max_size=4))
tenants = _mostly(st.sampled_from(["acme", "globex"]), short_texts, texts)
floats = _mostly(
    st.floats(min_value=0.0, max_value=2.0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-0.0, math.nan, math.inf, 1e308]),
)
similarities = _mostly(
    st.floats(min_value=0.5, max_value=1.0),
    st.floats(allow_nan=True, allow_infinity=True),
)
int32s = _mostly(
    st.integers(min_value=1, max_value=256),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
roles = _mostly(st.sampled_from(["user", "assistant"]), st.just("system"), short_texts)


def _turns(message: Callable[..., Any]) -> st.SearchStrategy[list[Any]]:
    few = st.lists(st.builds(message, role=roles, content=texts), max_size=3)
    # Huge repeated fields: up to 20,000 turns that fit in one message.
    many = st.integers(min_value=101, max_value=20_000).map(
        lambda count: [message(role="user", content="hi")] * count
    )
    return _mostly(few, many)


def _params() -> st.SearchStrategy[cache_pb2.GenerationParams]:
    return st.builds(
        cache_pb2.GenerationParams,
        temperature=st.one_of(st.none(), floats),
        max_tokens=st.one_of(st.none(), int32s),
    )


scopes = st.builds(
    cache_pb2.Scope,
    tenant=tenants,
    model=st.one_of(st.just("auto"), short_texts),
    system_prompt=texts,
    conversation=_turns(cache_pb2.ChatMessage),
    params=_params(),
)
metadata_maps = st.one_of(
    st.dictionaries(short_texts, texts, max_size=4),
    st.integers(min_value=100, max_value=5000).map(
        lambda count: {f"k{index}": "v" for index in range(count)}
    ),
)
cache_requests = st.one_of(
    st.tuples(
        st.just("Lookup"),
        st.builds(
            cache_pb2.LookupRequest,
            query=texts,
            scope=scopes,
            min_similarity=st.one_of(st.none(), similarities),
        ),
    ),
    st.tuples(
        st.just("Store"),
        st.builds(
            cache_pb2.StoreRequest,
            query=texts,
            scope=scopes,
            answer=texts,
            metadata=metadata_maps,
            finish_reason=st.one_of(st.just("stop"), short_texts),
        ),
    ),
    st.tuples(
        st.just("Feedback"),
        st.builds(
            cache_pb2.FeedbackRequest,
            entry_id=st.one_of(st.integers(0, 10**30).map(str), short_texts),
            tenant=tenants,
            rating=st.integers(min_value=-5, max_value=9),
        ),
    ),
    st.tuples(
        st.just("Invalidate"),
        st.one_of(
            st.builds(cache_pb2.InvalidateRequest, entry_id=texts),
            st.builds(
                cache_pb2.InvalidateRequest, entry_id=texts, entry_tenant=tenants
            ),
            st.builds(cache_pb2.InvalidateRequest, tenant=texts),
            st.builds(
                cache_pb2.InvalidateRequest,
                query=st.builds(cache_pb2.QueryTarget, query=texts, scope=scopes),
            ),
            st.just(cache_pb2.InvalidateRequest()),
        ),
    ),
    st.tuples(st.just("Stats"), st.just(cache_pb2.StatsRequest())),
)
route_requests = st.builds(
    router_pb2.RouteRequest,
    query=texts,
    tenant=tenants,
    user=_mostly(st.sampled_from(["", "user-1"]), short_texts, texts),
    system_prompt=texts,
    conversation=_turns(router_pb2.ChatMessage),
    temperature=st.one_of(st.none(), floats),
    max_tokens=st.one_of(st.none(), int32s),
    tier=_mostly(st.integers(min_value=0, max_value=3), st.integers(-3, 99)),
    skip_cache=st.booleans(),
)
router_requests = st.one_of(
    st.tuples(st.just("Route"), route_requests),
    st.tuples(st.just("RouteStream"), route_requests),
    st.tuples(st.just("Classify"), st.builds(router_pb2.ClassifyRequest, query=texts)),
    st.tuples(
        st.just("Feedback"),
        st.one_of(
            st.builds(
                router_pb2.FeedbackRequest,
                tenant=tenants,
                request_id=texts,
                rating=st.integers(-5, 9),
            ),
            st.builds(
                router_pb2.FeedbackRequest,
                tenant=tenants,
                cache_entry_id=texts,
                rating=st.integers(-5, 9),
            ),
        ),
    ),
)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# A lone surrogate in UTF-8 form, stray continuation bytes, and an overlong NUL.
INVALID_UTF8 = st.sampled_from([b"\xed\xa0\x80", b"\x80\xbf", b"\xc0\x80", b"\xff"])


@st.composite
def invalid_utf8_messages(draw: st.DrawFn) -> bytes:
    """A message whose string field 1 or 2 contains invalid UTF-8 between valid text."""
    field = draw(st.sampled_from([1, 2]))
    payload = (
        draw(st.text(max_size=8)).encode()
        + draw(INVALID_UTF8)
        + draw(st.text(max_size=8)).encode()
    )
    return bytes([field << 3 | 2]) + _varint(len(payload)) + payload


raw_bodies = st.one_of(
    st.binary(max_size=256), invalid_utf8_messages(), st.binary(min_size=4096)
)


# --- calls -------------------------------------------------------------------


def _status(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        result = call()
        if not hasattr(result, "SerializeToString") and hasattr(result, "__iter__"):
            list(result)  # type: ignore[call-overload]
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return, attr-defined]
    return grpc.StatusCode.OK


def _call_cache(channel: grpc.Channel, method: str, request: Any) -> grpc.StatusCode:
    stub = cache_pb2_grpc.CacheServiceStub(channel)
    return _status(lambda: getattr(stub, method)(request, timeout=CALL_TIMEOUT_S))


def _call_router(channel: grpc.Channel, method: str, request: Any) -> grpc.StatusCode:
    stub = router_pb2_grpc.RouterServiceStub(channel)
    return _status(lambda: getattr(stub, method)(request, timeout=CALL_TIMEOUT_S))


def _call_raw(
    channel: grpc.Channel, path: str, body: bytes, stream: bool = False
) -> grpc.StatusCode:
    if stream:
        streaming = channel.unary_stream(path)
        return _status(lambda: streaming(body, timeout=CALL_TIMEOUT_S))
    unary = channel.unary_unary(path)
    return _status(lambda: unary(body, timeout=CALL_TIMEOUT_S))


def _assert_serving(channel: grpc.Channel) -> None:
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
    )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


# --- tests -------------------------------------------------------------------


@FUZZ_SETTINGS
@given(call=cache_requests)
def test_cache_answers_random_requests_with_defined_status(
    cache_channel: grpc.Channel, call: tuple[str, Any]
) -> None:
    method, request = call

    code = _call_cache(cache_channel, method, request)

    assert code in CACHE_CODES, f"{method} ended with {code.name}"
    _assert_serving(cache_channel)


@FUZZ_SETTINGS
@given(
    method=st.sampled_from(["Lookup", "Store", "Invalidate", "Stats", "Feedback"]),
    body=raw_bodies,
)
def test_cache_answers_raw_bytes_with_defined_status(
    cache_channel: grpc.Channel, method: str, body: bytes
) -> None:
    code = _call_raw(cache_channel, f"/querygate.cache.v1.CacheService/{method}", body)

    assert code in CACHE_CODES, f"{method} ended with {code.name}"
    _assert_serving(cache_channel)


@FUZZ_SETTINGS
@given(call=router_requests)
def test_router_answers_random_requests_with_defined_status(
    router_channel: grpc.Channel, call: tuple[str, Any]
) -> None:
    method, request = call

    code = _call_router(router_channel, method, request)

    assert code in ROUTER_CODES, f"{method} ended with {code.name}"
    _assert_serving(router_channel)


@FUZZ_SETTINGS
@given(
    method=st.sampled_from(["Route", "RouteStream", "Classify", "Feedback"]),
    body=raw_bodies,
)
def test_router_answers_raw_bytes_with_defined_status(
    router_channel: grpc.Channel, method: str, body: bytes
) -> None:
    path = f"/querygate.router.v1.RouterService/{method}"

    code = _call_raw(router_channel, path, body, stream=method == "RouteStream")

    assert code in ROUTER_CODES, f"{method} ended with {code.name}"
    _assert_serving(router_channel)


def _resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("VmRSS missing from /proc/self/status")


def _adversarial_batch(seed: int) -> list[tuple[str, str, Any]]:
    """Return (service, method, request) triples, the same for the same seed."""
    rng = random.Random(seed)
    huge = "\U0001f600" * 1_000_000
    batch: list[tuple[str, str, Any]] = []
    for index in range(6):
        text = "".join(rng.choice("ab \x00\x1b\u202e") for _ in range(40))
        turns = [cache_pb2.ChatMessage(role="user", content="hi")] * rng.choice(
            [1, 150, 5000]
        )
        scope = cache_pb2.Scope(tenant="acme", model="auto", conversation=turns)
        batch += [
            ("cache", "Lookup", cache_pb2.LookupRequest(query=huge, scope=scope)),
            ("cache", "Lookup", cache_pb2.LookupRequest(query=text, scope=scope)),
            (
                "cache",
                "Store",
                cache_pb2.StoreRequest(
                    query=f"question {index}",
                    scope=cache_pb2.Scope(tenant="acme", model="auto"),
                    answer="a" * 100_000,
                    finish_reason="stop",
                ),
            ),
            ("router", "Route", router_pb2.RouteRequest(query=huge, tenant="acme")),
            (
                "router",
                "Route",
                router_pb2.RouteRequest(
                    query=f"question {index}", tenant="acme", system_prompt=text
                ),
            ),
            ("router", "Classify", router_pb2.ClassifyRequest(query=text * 400)),
        ]
    return batch


def test_memory_stays_bounded_over_rounds(
    cache_channel: grpc.Channel, router_channel: grpc.Channel
) -> None:
    batch = _adversarial_batch(seed=7)
    channels = {"cache": cache_channel, "router": router_channel}
    callers = {"cache": _call_cache, "router": _call_router}
    resident: list[float] = []

    for _ in range(MEMORY_ROUNDS):
        for service, method, request in batch:
            code = callers[service](channels[service], method, request)
            assert code in ROUTER_CODES, f"{service} {method} ended with {code.name}"
        # Count memory that is still referenced, not garbage awaiting collection.
        gc.collect()
        resident.append(_resident_mb())

    growth = resident[-1] - resident[1]
    assert growth < MAX_RSS_GROWTH_MB, f"RSS per round (MB): {resident}"
    _assert_serving(cache_channel)
    _assert_serving(router_channel)
