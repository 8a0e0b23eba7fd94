"""Feedback on served answers: a bad mark removes the entry, and both are counted.

Counts start at zero when the process starts, like the other cache counters.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum

from cache_service.cache import SemanticCache
from cache_service.entries import check_tenant_id
from cache_service.errors import EntryNotFoundError


class FeedbackRating(Enum):
    """A caller's verdict on a served answer."""

    GOOD = "good"
    BAD = "bad"


@dataclass(frozen=True)
class FeedbackCounts:
    """Marks received since the process started."""

    good: int
    bad: int


class FeedbackRecorder:
    """Applies feedback marks to the entries of a cache and counts them.

    A mark applies only to an entry of the caller's tenant. An entry of another
    tenant gets the same error as an unknown id, so a caller cannot learn which
    ids exist outside its tenant.
    """

    def __init__(self, cache: SemanticCache) -> None:
        self._cache = cache
        self._lock = threading.Lock()
        self._good = 0
        self._bad = 0

    def record(self, entry_id: int, tenant: str, rating: FeedbackRating) -> bool:
        """Count a mark on an entry, and remove the entry when the mark is bad.

        Returns True when this mark removed the entry. A bad mark that races with
        another removal of the same entry is still counted but returns False.

        Raises:
            InvalidRequestError: the tenant id is empty, too long or not printable.
            EntryNotFoundError: no entry with this id belongs to ``tenant``.
        """
        check_tenant_id(tenant)
        if self._cache.entry_tenant(entry_id) != tenant:
            raise EntryNotFoundError(
                f"entry_id {entry_id} not found for tenant {tenant!r}: it was "
                "removed, evicted or expired, or it belongs to another tenant. "
                "Send an entry_id that Lookup or Store returned for this tenant."
            )

        removed = False
        if rating is FeedbackRating.BAD:
            removed = self._cache.invalidate_entry(entry_id, tenant) == 1
        with self._lock:
            if rating is FeedbackRating.GOOD:
                self._good += 1
            else:
                self._bad += 1
        return removed

    def counts(self) -> FeedbackCounts:
        """Return the good and bad marks counted so far."""
        with self._lock:
            return FeedbackCounts(good=self._good, bad=self._bad)
