"""Tests of durable entries: SQLite store, restart, model versioning, failed writes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from cache_service.cache import SemanticCache
from cache_service.embedding import Vectors
from cache_service.entries import CacheEntry, HitLayer, LookupQuery, StoreCommand
from cache_service.errors import IndexVersionError, StorageError
from cache_service.persistence import DATABASE_NAME, SqliteEntryStore
from cache_service.scope import Scope
from cache_service.testing import FakeEmbedder, ManualClock, settings_for_tests

ACME = Scope(tenant="acme")


def _open_cache(
    data_dir: Path, embedder: FakeEmbedder, clock: ManualClock, **overrides: object
) -> SemanticCache:
    store = SqliteEntryStore.open(data_dir, embedder.model_name, embedder.dimension)
    settings = settings_for_tests(data_dir=data_dir, **overrides)
    return SemanticCache(settings, embedder, clock=clock, entry_store=store)


def _store(cache: SemanticCache, query: str, answer: str = "an answer") -> int:
    outcome = cache.store(
        StoreCommand(query=query, scope=ACME, answer=answer, finish_reason="stop")
    )
    assert outcome.entry_id is not None
    return outcome.entry_id


def _answer(cache: SemanticCache, query: str) -> str | None:
    outcome = cache.lookup(LookupQuery(query=query, scope=ACME))
    return None if outcome.entry is None else outcome.entry.answer


def test_entries_survive_restart(
    tmp_path: Path, fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    fake_embedder.set_similar("paraphrase", "original", 0.95)
    cache = _open_cache(tmp_path, fake_embedder, clock)
    entry_id = _store(cache, "original", "stored answer")
    _store(cache, "another question", "second answer")
    before = cache.stats()
    cache.close()

    reopened = _open_cache(tmp_path, fake_embedder, clock)
    exact = reopened.lookup(LookupQuery(query="original", scope=ACME))
    semantic = reopened.lookup(LookupQuery(query="paraphrase", scope=ACME))

    assert exact.entry is not None
    assert exact.entry.entry_id == entry_id
    assert exact.entry.answer == "stored answer"
    assert semantic.layer is HitLayer.SEMANTIC
    assert reopened.stats().entries == before.entries
    assert reopened.stats().index_vectors == before.index_vectors


def test_removed_entries_stay_removed_after_restart(
    tmp_path: Path, fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    cache = _open_cache(tmp_path, fake_embedder, clock, max_entries=2)
    _store(cache, "evicted")
    invalidated = _store(cache, "invalidated")
    _store(cache, "kept")
    assert cache.stats().evictions == 1
    assert cache.invalidate_entry(invalidated) == 1
    cache.close()

    reopened = _open_cache(tmp_path, fake_embedder, clock, max_entries=2)

    assert _answer(reopened, "evicted") is None
    assert _answer(reopened, "invalidated") is None
    assert _answer(reopened, "kept") == "an answer"
    assert reopened.stats().entries == 1
    assert reopened.stats().index_vectors == 1


def test_ids_are_not_reused_after_restart(
    tmp_path: Path, fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    cache = _open_cache(tmp_path, fake_embedder, clock)
    newest = _store(cache, "newest")
    cache.invalidate_entry(newest)
    cache.close()

    reopened = _open_cache(tmp_path, fake_embedder, clock)
    assert _store(reopened, "after restart") > newest
    assert reopened.invalidate_entry(newest) == 0


def test_restart_drops_expired_entries(
    tmp_path: Path, fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    fake_embedder.set_similar("paraphrase", "original", 0.95)
    cache = _open_cache(tmp_path, fake_embedder, clock)
    _store(cache, "original")
    clock.advance(1000)
    _store(cache, "fresh")
    cache.close()

    clock.advance(1000)
    reopened = _open_cache(tmp_path, fake_embedder, clock)
    assert _answer(reopened, "paraphrase") is None
    assert _answer(reopened, "original") == "an answer"
    assert reopened.stats().index_vectors == 1
    reopened.close()

    clock.advance(2000)
    last = _open_cache(tmp_path, fake_embedder, clock)
    assert _answer(last, "original") is None
    assert last.stats().entries == 1
    rows = sqlite3.connect(tmp_path / DATABASE_NAME).execute(
        "SELECT COUNT(*) FROM entries"
    )
    assert rows.fetchone() == (1,)


def test_smaller_max_entries_applies_at_restart(
    tmp_path: Path, fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    cache = _open_cache(tmp_path, fake_embedder, clock)
    for number in range(5):
        _store(cache, f"question {number}")
        clock.advance(1)
    cache.close()

    reopened = _open_cache(tmp_path, fake_embedder, clock, max_entries=2)

    assert reopened.stats().entries == 2
    assert _answer(reopened, "question 4") == "an answer"
    assert _answer(reopened, "question 0") is None


def test_other_model_is_rejected_with_fix(tmp_path: Path, clock: ManualClock) -> None:
    first = FakeEmbedder(dimension=32)
    cache = _open_cache(tmp_path, first, clock)
    _store(cache, "question")
    cache.close()

    with pytest.raises(IndexVersionError, match="Delete or move") as raised:
        SqliteEntryStore.open(tmp_path, "fake-64", 64)
    assert "fake-32" in str(raised.value)
    assert "'embedding_dimension': '64'" in str(raised.value)


class _FailingStore:
    """An EntryStore whose writes fail after it loaded, like a full disk."""

    def load(self) -> Iterator[tuple[CacheEntry, Vectors | None]]:
        return iter(())

    def next_id(self) -> int:
        return 1

    def write(
        self, insert: tuple[CacheEntry, Vectors | None] | None, delete: Sequence[int]
    ) -> None:
        if insert is not None or delete:
            raise StorageError("cache database write failed: disk I/O error")

    def close(self) -> None:
        pass


def test_failed_write_leaves_cache_unchanged(
    fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    cache = SemanticCache(
        settings_for_tests(), fake_embedder, clock=clock, entry_store=_FailingStore()
    )
    with pytest.raises(StorageError, match="disk I/O error"):
        _store(cache, "question")

    assert _answer(cache, "question") is None
    assert cache.stats().entries == 0
    assert cache.stats().index_vectors == 0
    assert cache.stats().stores == 0


def test_memory_bound_evicts_least_recent(
    fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    # Each entry is estimated at its text plus 512 + 4 * 64 bytes: about 1.8 KB
    # here, so a 0.005 MB (5243 byte) bound fits two entries and not three.
    cache = SemanticCache(
        settings_for_tests(max_memory_mb=0.005), fake_embedder, clock=clock
    )
    _store(cache, "first", "a" * 1000)
    _store(cache, "second", "b" * 1000)
    _store(cache, "third", "c" * 1000)

    assert _answer(cache, "first") is None
    assert _answer(cache, "second") == "b" * 1000
    assert _answer(cache, "third") == "c" * 1000
    assert cache.stats().evictions == 1


def test_data_dir_that_is_a_file_is_reported(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("")
    with pytest.raises(StorageError, match="failed to open the cache database"):
        SqliteEntryStore.open(not_a_folder, "fake-64", 64)


def test_restart_that_deletes_most_entries_warns(
    tmp_path: Path,
    fake_embedder: FakeEmbedder,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = _open_cache(tmp_path, fake_embedder, clock)
    for number in range(120):
        _store(cache, f"question {number}")
    cache.close()
    clock.advance(10)

    with caplog.at_level("WARNING", logger="cache_service.cache"):
        reopened = _open_cache(
            tmp_path, fake_embedder, clock, exact_ttl_s=3.0, semantic_ttl_s=3.0
        )

    (record,) = [r for r in caplog.records if r.msg == "entries_deleted_on_load"]
    assert record.expired == 120  # type: ignore[attr-defined]
    assert record.exact_ttl_s == 3.0  # type: ignore[attr-defined]
    assert "restore" in record.hint  # type: ignore[attr-defined]
    assert reopened.stats().entries == 0
    reopened.close()


def test_restart_that_deletes_few_entries_stays_quiet(
    tmp_path: Path,
    fake_embedder: FakeEmbedder,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = _open_cache(tmp_path, fake_embedder, clock)
    for number in range(5):
        _store(cache, f"question {number}")
    cache.close()

    with caplog.at_level("WARNING", logger="cache_service.cache"):
        _open_cache(tmp_path, fake_embedder, clock, max_entries=2).close()

    assert not [r for r in caplog.records if r.msg == "entries_deleted_on_load"]
