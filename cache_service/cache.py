"""The semantic cache: an exact layer on normalized text, then a FAISS layer by cosine.

Entries are partitioned by scope key, and each scope has its own vector index, so a
lookup can only ever see entries of its own tenant and scope. Index and metadata
change together under one lock, and embedding runs outside it. Single process only.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from cache_service.embedding import Embedder, Vectors
from cache_service.entries import (
    CacheEntry,
    CacheStats,
    HitLayer,
    LookupOutcome,
    LookupQuery,
    StoreCommand,
    StoreOutcome,
    check_lookup,
    check_query,
    check_scope,
    check_store,
    check_tenant_id,
    estimate_entry_bytes,
    reason_not_cacheable,
)
from cache_service.errors import StorageError
from cache_service.guard import build_guard
from cache_service.normalize import normalize_query
from cache_service.pair_features import QueryTokens, tokenize
from cache_service.persistence import EntryStore
from cache_service.scope import Scope
from cache_service.settings import CacheSettings
from cache_service.vector_index import PartitionedIndex

logger = logging.getLogger(__name__)
# A load that deletes at least this many entries, and at least half of the
# store, logs a warning.
_LOUD_DROP_MIN = 100

# Missed queries whose vectors are kept for the Store that follows a miss. A Store
# normally arrives within one model call, so a few hundred cover the calls in
# flight; each vector takes 1.5 KiB at dimension 384.
MISS_VECTORS_KEPT = 512


class SemanticCache:
    """Stores answers by scope and query, and finds them by exact text or cosine.

    An entry serves exact hits for ``exact_ttl_s`` and semantic hits for
    ``semantic_ttl_s`` after it was stored. Expired entries are never served, and
    ``sweep_expired`` frees them. Beyond ``max_entries`` the least recently used
    entry is evicted. Entry ids increase and are never reused, so a removed id can
    never resolve to another entry's answer.
    """

    def __init__(
        self,
        settings: CacheSettings,
        embedder: Embedder,
        clock: Callable[[], float] = time.time,
        entry_store: EntryStore | None = None,
    ) -> None:
        self._settings = settings
        self._embedder = embedder
        self._clock = clock
        self._entry_store = entry_store
        self._lock = threading.Lock()
        # Least recently used first. A hit or a store moves an entry to the end.
        self._entries: OrderedDict[int, CacheEntry] = OrderedDict()
        self._exact: dict[tuple[str, str], int] = {}
        self._index = PartitionedIndex(embedder.dimension)
        self._guard = build_guard(settings)
        self._by_tenant: dict[str, set[int]] = {}
        # Vectors of recent semantic misses by query text, so that the Store
        # that usually follows a miss does not embed the same text again.
        self._miss_vectors: OrderedDict[str, Vectors] = OrderedDict()
        self._next_id = 1
        self._memory_bytes = 0
        self._exact_hits = 0
        self._semantic_hits = 0
        self._misses = 0
        self._stores = 0
        self._evictions = 0
        self._expirations = 0
        if entry_store is not None:
            self._load(entry_store)

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def lookup(self, request: LookupQuery) -> LookupOutcome:
        """Return the freshest matching entry of the request's scope, if any.

        Raises:
            InvalidRequestError: the query, the scope or the threshold is invalid.
            EmbeddingError: the model failed on the query.
        """
        check_lookup(request, self._settings)
        scope_key = request.scope.key()
        normalized = normalize_query(request.query)
        with self._lock:
            outcome = self._lookup_exact(scope_key, normalized, self._clock())
            if outcome is not None:
                self._exact_hits += 1
                return outcome

        # A query beyond the token window would be embedded from its first tokens
        # only, so two long prompts with a shared prefix would collide. Such
        # queries use the exact layer alone.
        if not self._fits_token_window(request.query):
            with self._lock:
                self._misses += 1
            return LookupOutcome(hit=False)

        vector = self._embedder.embed([request.query])[0]
        tokens = tokenize(request.query) if self._guard is not None else None
        threshold = request.min_similarity
        if threshold is None:
            threshold = self._settings.min_cosine_similarity
        with self._lock:
            outcome = self._lookup_semantic(
                scope_key, vector, threshold, self._clock(), tokens
            )
            if outcome.hit:
                self._semantic_hits += 1
            else:
                self._misses += 1
                self._remember_miss_vector(request.query, vector)
            return outcome

    def store(self, request: StoreCommand) -> StoreOutcome:
        """Store an answer, replacing the entry with the same scope and normalized text.

        Returns an outcome with ``stored=False`` and a reason when the answer must
        not be replayed (not finished normally, or empty).

        Raises:
            InvalidRequestError: the query, scope, answer or metadata is invalid.
            EmbeddingError: the model failed on the query.
        """
        check_store(request, self._settings)
        reason = reason_not_cacheable(request)
        if reason is not None:
            return StoreOutcome(stored=False, reason=reason)

        vector: Vectors | None = None
        if self._fits_token_window(request.query):
            with self._lock:
                vector = self._miss_vectors.pop(request.query, None)
            if vector is None:
                vector = self._embedder.embed([request.query])[0]

        scope_key = request.scope.key()
        normalized = normalize_query(request.query)
        with self._lock:
            previous = self._exact.get((scope_key, normalized))
            entry = CacheEntry(
                entry_id=self._next_id,
                scope_key=scope_key,
                tenant=request.scope.tenant,
                normalized_query=normalized,
                answer=request.answer,
                metadata=dict(request.metadata),
                created_at=self._clock(),
                in_index=vector is not None,
            )
            replaced = [] if previous is None else [previous]
            evicted = self._eviction_candidates(entry, replaced)

            # Write the database first, so a failed write leaves memory unchanged.
            if self._entry_store is not None:
                entry = self._write_new_entry(
                    self._entry_store, entry, vector, replaced + evicted
                )
            self._next_id = entry.entry_id + 1
            for entry_id in replaced + evicted:
                self._forget(entry_id)
            self._insert(entry, vector)
            self._stores += 1
            self._evictions += len(evicted)
        return StoreOutcome(stored=True, entry_id=entry.entry_id)

    def _write_new_entry(
        self,
        entry_store: EntryStore,
        entry: CacheEntry,
        vector: Vectors | None,
        delete: list[int],
    ) -> CacheEntry:
        """Write ``entry`` and return it as stored, with a new id after an id collision.

        The data folder's lock keeps other processes out of the database, but if
        one wrote anyway, it may have taken ids that this cache has not issued
        yet. Then the counter moves past the database's ids and the write is
        retried once, so one collision does not fail every later store.

        Raises:
            StorageError: the write failed, and the database has no newer ids.
        """
        try:
            entry_store.write((entry, vector), delete=delete)
            return entry
        except StorageError:
            next_id = entry_store.next_id()
            if next_id <= entry.entry_id:
                raise
        logger.warning(
            "entry_id_skipped",
            extra={"entry_id": entry.entry_id, "next_id": next_id},
        )
        self._next_id = next_id
        retried = dataclasses.replace(entry, entry_id=next_id)
        entry_store.write((retried, vector), delete=delete)
        return retried

    def invalidate_entry(self, entry_id: int, tenant: str | None = None) -> int:
        """Remove one entry by id and return 1 if it existed, else 0.

        With ``tenant``, an entry of another tenant is kept and 0 is returned, the
        same result as for an id that does not exist, so the caller cannot tell
        which ids other tenants hold.

        Raises:
            InvalidRequestError: ``tenant`` is empty, too long or not printable.
        """
        if tenant is not None:
            check_tenant_id(tenant, field_name="entry_tenant")
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is None or (tenant is not None and entry.tenant != tenant):
                return 0
            return self._delete([entry_id])

    def entry_tenant(self, entry_id: int) -> str | None:
        """Return the tenant of the entry with this id, or None when there is none.

        Ids are never reused, so the answer stays true until the entry is removed.
        """
        with self._lock:
            entry = self._entries.get(entry_id)
            return None if entry is None else entry.tenant

    def invalidate_tenant(self, tenant: str) -> int:
        """Remove every entry of ``tenant`` and return how many were removed.

        Raises:
            InvalidRequestError: the tenant id is empty, too long or not printable.
        """
        check_tenant_id(tenant)
        with self._lock:
            return self._delete(list(self._by_tenant.get(tenant, ())))

    def invalidate_query(self, query: str, scope: Scope) -> int:
        """Remove the entry stored for this scope and normalized query text.

        Raises:
            InvalidRequestError: the query or the scope is invalid.
        """
        check_query(query, self._settings, field_name="query.query")
        check_scope(scope, self._settings, field_name="query.scope")
        key = (scope.key(), normalize_query(query))
        with self._lock:
            entry_id = self._exact.get(key)
            return 0 if entry_id is None else self._delete([entry_id])

    def sweep_expired(self) -> int:
        """Remove entries past both TTLs and vectors past the semantic TTL.

        Returns the number of entries removed. Scans every entry under the lock.
        """
        now = self._clock()
        with self._lock:
            expired = []
            for entry in self._entries.values():
                age = now - entry.created_at
                if self._expired(age):
                    expired.append(entry.entry_id)
                elif entry.in_index and not self._alive(age, HitLayer.SEMANTIC):
                    self._drop_vector(entry)
            removed = self._delete(expired)
            self._expirations += removed
        if removed:
            logger.info("cache_swept", extra={"expired_entries": removed})
        return removed

    def stats(self) -> CacheStats:
        """Return counters since start and the current sizes."""
        with self._lock:
            return CacheStats(
                entries=len(self._entries),
                index_vectors=len(self._index),
                exact_hits=self._exact_hits,
                semantic_hits=self._semantic_hits,
                misses=self._misses,
                stores=self._stores,
                evictions=self._evictions,
                expirations=self._expirations,
                index_rebuilds_running=self._index.rebuilding,
            )

    def consistency_problems(self) -> list[str]:
        """List every mismatch between the entries, exact keys, tenants and index.

        An empty list means each vector belongs to a live entry of its own scope,
        and each entry is reachable by its exact key and tenant.
        """
        problems: list[str] = []
        with self._lock:
            indexed: set[int] = set()
            for scope_key, ids in self._index.ids_by_partition().items():
                for entry_id in ids:
                    entry = self._entries.get(entry_id)
                    if entry is None or entry.scope_key != scope_key:
                        problems.append(f"vector {entry_id} has no entry in its scope")
                    indexed.add(entry_id)
            for entry_id, entry in self._entries.items():
                if entry.in_index != (entry_id in indexed):
                    problems.append(f"entry {entry_id} in_index flag is wrong")
                key = (entry.scope_key, entry.normalized_query)
                if self._exact.get(key) != entry_id:
                    problems.append(f"entry {entry_id} is not its exact key's entry")
                if entry_id not in self._by_tenant.get(entry.tenant, set()):
                    problems.append(f"entry {entry_id} is missing from its tenant")
            if len(self._exact) != len(self._entries):
                problems.append("exact keys and entries differ in number")
        return problems

    def close(self) -> None:
        """Close the durable store. The cache must not be used afterwards."""
        with self._lock:
            if self._entry_store is not None:
                self._entry_store.close()

    def _remember_miss_vector(self, query: str, vector: Vectors) -> None:
        """Keep the vector of a missed query for its Store. Call under the lock."""
        self._miss_vectors[query] = vector
        self._miss_vectors.move_to_end(query)
        if len(self._miss_vectors) > MISS_VECTORS_KEPT:
            self._miss_vectors.popitem(last=False)

    def _fits_token_window(self, query: str) -> bool:
        return self._embedder.token_count(query) <= self._embedder.max_tokens

    def _expired(self, age_s: float) -> bool:
        return not self._alive(age_s, HitLayer.EXACT) and not self._alive(
            age_s, HitLayer.SEMANTIC
        )

    def _alive(self, age_s: float, layer: HitLayer) -> bool:
        if layer is HitLayer.EXACT:
            return age_s < self._settings.exact_ttl_s
        return age_s < self._settings.semantic_ttl_s

    def _lookup_exact(
        self, scope_key: str, normalized: str, now: float
    ) -> LookupOutcome | None:
        entry_id = self._exact.get((scope_key, normalized))
        if entry_id is None:
            return None
        entry = self._entries[entry_id]
        age = now - entry.created_at
        if not self._alive(age, HitLayer.EXACT):
            return None
        self._entries.move_to_end(entry_id)
        return LookupOutcome(
            hit=True, layer=HitLayer.EXACT, similarity=1.0, entry=entry, age_s=age
        )

    def _lookup_semantic(
        self,
        scope_key: str,
        vector: Vectors,
        threshold: float,
        now: float,
        tokens: QueryTokens | None,
    ) -> LookupOutcome:
        candidates = self._index.search(
            scope_key, vector, self._settings.search_candidates
        )
        # A miss reports the cosine of the closest live entry, even when the guard
        # rejected that entry.
        best_similarity = 0.0
        for entry_id, score in candidates:
            entry = self._entries.get(entry_id)
            if entry is None:
                continue
            age = now - entry.created_at
            if not self._alive(age, HitLayer.SEMANTIC):
                continue
            # Rounding can put the inner product of unit vectors a hair above 1.
            similarity = min(score, 1.0)
            best_similarity = max(best_similarity, similarity)
            if similarity < threshold:
                break
            if tokens is not None and not self._guard_accepts(
                tokens, entry, similarity
            ):
                # A later candidate may still be a paraphrase of the query.
                continue
            self._entries.move_to_end(entry_id)
            return LookupOutcome(
                hit=True,
                layer=HitLayer.SEMANTIC,
                similarity=similarity,
                entry=entry,
                age_s=age,
            )
        return LookupOutcome(hit=False, similarity=best_similarity)

    def _guard_accepts(
        self, tokens: QueryTokens, entry: CacheEntry, similarity: float
    ) -> bool:
        if self._guard is None:
            return True
        decision = self._guard.check(tokens, entry.normalized_query, similarity)
        if not decision.accepted:
            logger.debug(
                "guard_rejected",
                extra={
                    "entry_id": entry.entry_id,
                    "reason": decision.reason,
                    "similarity": round(similarity, 4),
                    "score": round(decision.score, 4),
                },
            )
        return decision.accepted

    def _load(self, entry_store: EntryStore) -> None:
        """Fill memory and the index from ``entry_store``, dropping expired entries."""
        now = self._clock()
        expired = []
        for entry, vector in entry_store.load():
            age = now - entry.created_at
            if self._expired(age):
                expired.append(entry.entry_id)
                continue
            if not self._alive(age, HitLayer.SEMANTIC):
                vector = None
                entry.in_index = False
            self._insert(entry, vector, resize=False)
        # One index build per partition, here, rather than one per doubling.
        self._index.resize_now()
        entry_store.write(None, delete=expired)
        self._next_id = entry_store.next_id()

        # A smaller max_entries than in the last run applies at once.
        evicted = self._eviction_candidates(None, [])
        self._delete(evicted)
        logger.info(
            "entries_loaded",
            extra={
                "entries": len(self._entries),
                "expired": len(expired),
                "evicted": len(evicted),
            },
        )
        dropped = len(expired) + len(evicted)
        if dropped >= _LOUD_DROP_MIN and dropped * 2 >= dropped + len(self._entries):
            # A lowered TTL or max_entries, even a typo, deletes for good.
            logger.warning(
                "entries_deleted_on_load",
                extra={
                    "expired": len(expired),
                    "evicted": len(evicted),
                    "kept": len(self._entries),
                    "exact_ttl_s": self._settings.exact_ttl_s,
                    "semantic_ttl_s": self._settings.semantic_ttl_s,
                    "max_entries": self._settings.max_entries,
                    "hint": "check exact_ttl_s, semantic_ttl_s and max_entries; "
                    "a snapshot taken "
                    "before the restart can be restored with `python -m "
                    "cache_service restore`",
                },
            )

    def _eviction_candidates(
        self, incoming: CacheEntry | None, leaving: list[int]
    ) -> list[int]:
        """Return the least recently used ids to evict so ``incoming`` fits."""
        count = len(self._entries) - len(leaving)
        size = self._memory_bytes - sum(
            estimate_entry_bytes(self._entries[entry_id], self._embedder.dimension)
            for entry_id in leaving
        )
        if incoming is not None:
            count += 1
            size += estimate_entry_bytes(incoming, self._embedder.dimension)
        max_bytes = self._settings.max_memory_mb * 1024 * 1024
        evicted: list[int] = []
        for entry_id, entry in self._entries.items():
            if count <= self._settings.max_entries and size <= max_bytes:
                break
            if entry_id in leaving:
                continue
            evicted.append(entry_id)
            count -= 1
            size -= estimate_entry_bytes(entry, self._embedder.dimension)
        return evicted

    def _insert(
        self, entry: CacheEntry, vector: Vectors | None, *, resize: bool = True
    ) -> None:
        self._memory_bytes += estimate_entry_bytes(entry, self._embedder.dimension)
        self._entries[entry.entry_id] = entry
        self._exact[(entry.scope_key, entry.normalized_query)] = entry.entry_id
        self._by_tenant.setdefault(entry.tenant, set()).add(entry.entry_id)
        if vector is not None:
            self._index.add(entry.scope_key, entry.entry_id, vector, resize=resize)

    def _delete(self, entry_ids: list[int]) -> int:
        """Remove entries from the database, then memory, and count those found."""
        present = [entry_id for entry_id in entry_ids if entry_id in self._entries]
        if not present:
            return 0
        if self._entry_store is not None:
            self._entry_store.write(None, delete=present)
        for entry_id in present:
            self._forget(entry_id)
        return len(present)

    def _forget(self, entry_id: int) -> None:
        """Remove an entry from memory and the index, but not from the database."""
        entry = self._entries.pop(entry_id)
        self._memory_bytes -= estimate_entry_bytes(entry, self._embedder.dimension)
        exact_key = (entry.scope_key, entry.normalized_query)
        if self._exact.get(exact_key) == entry_id:
            del self._exact[exact_key]
        tenant_ids = self._by_tenant[entry.tenant]
        tenant_ids.discard(entry_id)
        if not tenant_ids:
            del self._by_tenant[entry.tenant]
        self._drop_vector(entry)

    def _drop_vector(self, entry: CacheEntry) -> None:
        if not entry.in_index:
            return
        self._index.remove(entry.scope_key, entry.entry_id)
        entry.in_index = False
