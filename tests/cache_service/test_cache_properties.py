"""Property tests: random operation sequences keep the cache consistent and correct."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cache_service.cache import SemanticCache
from cache_service.entries import HitLayer, LookupQuery, StoreCommand
from cache_service.normalize import normalize_query
from cache_service.scope import Scope
from cache_service.testing import FakeEmbedder, ManualClock, settings_for_tests

QUERIES = ["What is DNS?", "what is dns", "Explain TCP", "Define UDP.", "Why HTTP?"]
TENANTS = ["acme", "globex"]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("store"), st.sampled_from(QUERIES), st.sampled_from(TENANTS)),
        st.tuples(
            st.just("lookup"), st.sampled_from(QUERIES), st.sampled_from(TENANTS)
        ),
        st.tuples(
            st.just("invalidate_query"),
            st.sampled_from(QUERIES),
            st.sampled_from(TENANTS),
        ),
        st.tuples(st.just("invalidate_tenant"), st.just(""), st.sampled_from(TENANTS)),
        st.tuples(st.just("invalidate_id"), st.integers(1, 40), st.just("")),
        st.tuples(
            st.just("advance"), st.sampled_from([10.0, 1000.0, 2000.0]), st.just("")
        ),
        st.tuples(st.just("sweep"), st.just(""), st.just("")),
    ),
    max_size=60,
)


def _answer_for(tenant: str, query: str, version: int) -> str:
    return f"{tenant}|{normalize_query(query)}|{version}"


@settings(max_examples=150, deadline=None, derandomize=True)
@given(steps=operations)
def test_random_operations_keep_cache_consistent(
    steps: list[tuple[str, object, str]],
) -> None:
    clock = ManualClock()
    cache = SemanticCache(
        settings_for_tests(max_entries=3), FakeEmbedder(), clock=clock
    )
    # The newest answer stored per (tenant, normalized query): a hit may only
    # ever return that answer.
    newest: dict[tuple[str, str], str] = {}
    version = 0

    for action, argument, tenant in steps:
        if action == "store":
            version += 1
            query = str(argument)
            answer = _answer_for(tenant, query, version)
            cache.store(
                StoreCommand(
                    query=query,
                    scope=Scope(tenant=tenant),
                    answer=answer,
                    finish_reason="stop",
                )
            )
            newest[(tenant, normalize_query(query))] = answer
        elif action == "lookup":
            query = str(argument)
            outcome = cache.lookup(LookupQuery(query=query, scope=Scope(tenant=tenant)))
            if outcome.hit:
                assert outcome.entry is not None
                assert outcome.layer is HitLayer.EXACT
                assert outcome.entry.answer == newest[(tenant, normalize_query(query))]
        elif action == "invalidate_query":
            cache.invalidate_query(str(argument), Scope(tenant=tenant))
        elif action == "invalidate_tenant":
            cache.invalidate_tenant(tenant)
        elif action == "invalidate_id":
            cache.invalidate_entry(int(str(argument)))
        elif action == "advance":
            clock.advance(float(str(argument)))
        else:
            cache.sweep_expired()

        assert cache.consistency_problems() == []
        assert cache.stats().entries <= 3
