"""Domain values of the cache (requests, entries, results) and request checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from cache_service.errors import InvalidRequestError
from cache_service.request_limits import (
    identifier_character_rule,
    query_violation,
    scope_violation,
)
from cache_service.scope import Scope
from cache_service.settings import CacheSettings

# Only answers that ended normally are replayed. "length" is cut off by the token
# limit, "content_filter" is a refusal, and an empty or unknown reason may be a
# failed call or a partial stream.
CACHEABLE_FINISH_REASONS = frozenset({"stop"})


class HitLayer(Enum):
    """Layer that served a hit."""

    EXACT = "exact"
    SEMANTIC = "semantic"


@dataclass(frozen=True)
class LookupQuery:
    """A request for a stored answer."""

    query: str
    scope: Scope
    # Overrides the service threshold for this lookup when set.
    min_similarity: float | None = None


@dataclass(frozen=True)
class StoreCommand:
    """A request to store an answer for a query."""

    query: str
    scope: Scope
    answer: str
    finish_reason: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass
class CacheEntry:
    """One stored answer. ``created_at`` is wall-clock seconds since the epoch."""

    entry_id: int
    scope_key: str
    tenant: str
    normalized_query: str
    answer: str
    metadata: Mapping[str, str]
    created_at: float
    # False when the query was too long to embed, or its semantic TTL ran out.
    in_index: bool


@dataclass(frozen=True)
class LookupOutcome:
    """Result of a lookup. ``similarity`` is also set on a miss with a candidate."""

    hit: bool
    layer: HitLayer | None = None
    similarity: float = 0.0
    entry: CacheEntry | None = None
    age_s: float = 0.0


@dataclass(frozen=True)
class StoreOutcome:
    """Result of a store. ``reason`` explains why nothing was stored."""

    stored: bool
    entry_id: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class CacheStats:
    """Counters since start, and current sizes."""

    entries: int
    index_vectors: int
    exact_hits: int
    semantic_hits: int
    misses: int
    stores: int
    evictions: int
    expirations: int
    # Scopes whose IVF index is being trained in the background now.
    index_rebuilds_running: int = 0


def check_query(query: str, settings: CacheSettings, field_name: str = "query") -> None:
    """Raise InvalidRequestError when ``query`` breaks a rule of ``query_violation``.

    The rules are those the router applies, so the cache never stores a query
    that the router would reject.
    """
    violation = query_violation(query, settings.max_query_chars, field_name)
    if violation is not None:
        raise InvalidRequestError(
            f"{violation.field} {violation.rule}. {violation.fix}"
        )


MAX_TENANT_CHARS = 128
# Model names are config names or provider ids, far shorter than this.
MAX_MODEL_CHARS = 256


def check_tenant_id(tenant: str, field_name: str = "tenant") -> None:
    """Raise InvalidRequestError unless ``tenant`` is a short, printable id.

    Control and format characters are rejected because tenant ids are written to
    the logs, where a newline could forge a log line.
    """
    if not tenant.strip():
        raise InvalidRequestError(
            f"{field_name} is required; got an empty string. Set it to the "
            "caller's tenant id, so entries are never shared across tenants."
        )
    if len(tenant) > MAX_TENANT_CHARS:
        raise InvalidRequestError(
            f"{field_name} must be at most {MAX_TENANT_CHARS} characters; got "
            f"{len(tenant)}. Use a short id such as acme-search."
        )
    rule = identifier_character_rule(tenant)
    if rule is not None:
        raise InvalidRequestError(
            f"{field_name} {rule}. Use a short id such as acme-search."
        )


def check_scope(
    scope: Scope, settings: CacheSettings, field_name: str = "scope"
) -> None:
    """Raise InvalidRequestError when the scope breaks a rule that the router shares.

    The rules and their default limits are those of ``request_limits``, so the
    cache rejects exactly what the router rejects when both run with defaults.
    """
    check_tenant_id(scope.tenant, f"{field_name}.tenant")
    if len(scope.model) > MAX_MODEL_CHARS:
        raise InvalidRequestError(
            f"{field_name}.model must be at most {MAX_MODEL_CHARS} characters; got "
            f"{len(scope.model)}. Send the tier or the model name the router chose."
        )
    rule = identifier_character_rule(scope.model)
    if rule is not None:
        raise InvalidRequestError(
            f"{field_name}.model {rule}. Send the tier, the model name or auto."
        )
    violation = scope_violation(
        scope.system_prompt,
        scope.conversation,
        scope.temperature,
        scope.max_tokens,
        settings.scope_limits(),
    )
    if violation is not None:
        path = _SCOPE_FIELD_PATHS.get(violation.field, violation.field)
        raise InvalidRequestError(
            f"{field_name}.{path} {violation.rule}. {violation.fix}"
        )


# Generation parameters sit in a sub-message of the cache's Scope.
_SCOPE_FIELD_PATHS = {
    "temperature": "params.temperature",
    "max_tokens": "params.max_tokens",
}


def check_lookup(request: LookupQuery, settings: CacheSettings) -> None:
    """Raise InvalidRequestError naming the first field of ``request`` that is bad."""
    check_query(request.query, settings)
    check_scope(request.scope, settings)
    threshold = request.min_similarity
    if threshold is not None and not (0.0 < threshold <= 1.0):
        raise InvalidRequestError(
            f"min_similarity must be in (0, 1]; got {threshold}. Leave it unset to use "
            f"the service threshold {settings.min_cosine_similarity}."
        )


def check_store(request: StoreCommand, settings: CacheSettings) -> None:
    """Raise InvalidRequestError naming the first field of ``request`` that is bad."""
    check_query(request.query, settings)
    check_scope(request.scope, settings)
    if len(request.answer) > settings.max_answer_chars:
        raise InvalidRequestError(
            f"answer must be at most {settings.max_answer_chars} characters; got "
            f"{len(request.answer)}. Do not cache answers this long."
        )
    _check_metadata_keys(request.metadata)
    metadata_chars = sum(len(k) + len(v) for k, v in request.metadata.items())
    if metadata_chars > settings.max_metadata_chars:
        raise InvalidRequestError(
            f"metadata must total at most {settings.max_metadata_chars} characters "
            f"of keys and values; got {metadata_chars}. Store ids, not documents."
        )


def _check_metadata_keys(metadata: Mapping[str, str]) -> None:
    # Keys are names that every hit returns and tools print, so they follow the
    # rule of ids.
    for key in sorted(metadata):
        if not key:
            raise InvalidRequestError(
                "metadata keys must not be empty; got an empty key. Name each "
                "value, as in model or tier."
            )
        rule = identifier_character_rule(key)
        if rule is not None:
            raise InvalidRequestError(
                f"metadata key {key[:40]!r} {rule}. Use a short name such as model."
            )


def reason_not_cacheable(request: StoreCommand) -> str | None:
    """Return why the answer must not be replayed, or None when it may be cached."""
    if request.finish_reason not in CACHEABLE_FINISH_REASONS:
        return (
            f"finish_reason is {request.finish_reason!r}; only answers with "
            f"finish_reason 'stop' are cached, because others may be cut off, "
            "refused or failed"
        )
    if not request.answer.strip():
        return "the answer is empty"
    return None


def estimate_entry_bytes(entry: CacheEntry, dimension: int) -> int:
    """Estimate the memory of an entry: text as UTF-8, vector, fixed overhead.

    NOTE: an estimate, not a measurement. CPython may store text in up to four
    bytes per character, and dict and object overheads vary.
    """
    text = entry.answer + entry.normalized_query + entry.scope_key
    metadata = sum(len(k) + len(v) for k, v in entry.metadata.items())
    return len(text.encode("utf-8")) + metadata + 4 * dimension + 512
