from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    TIER_SIMPLE: _ClassVar[Tier]
    TIER_MEDIUM: _ClassVar[Tier]
    TIER_COMPLEX: _ClassVar[Tier]

class CacheStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CACHE_STATUS_UNSPECIFIED: _ClassVar[CacheStatus]
    CACHE_STATUS_MISS: _ClassVar[CacheStatus]
    CACHE_STATUS_EXACT_HIT: _ClassVar[CacheStatus]
    CACHE_STATUS_SEMANTIC_HIT: _ClassVar[CacheStatus]
    CACHE_STATUS_BYPASSED: _ClassVar[CacheStatus]
    CACHE_STATUS_UNAVAILABLE: _ClassVar[CacheStatus]
    CACHE_STATUS_SHARED: _ClassVar[CacheStatus]

class FeedbackRating(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_RATING_UNSPECIFIED: _ClassVar[FeedbackRating]
    FEEDBACK_RATING_GOOD: _ClassVar[FeedbackRating]
    FEEDBACK_RATING_BAD: _ClassVar[FeedbackRating]

class CheckStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_STATUS_UNSPECIFIED: _ClassVar[CheckStatus]
    CHECK_STATUS_OK: _ClassVar[CheckStatus]
    CHECK_STATUS_DEGRADED: _ClassVar[CheckStatus]
    CHECK_STATUS_FAILING: _ClassVar[CheckStatus]
TIER_UNSPECIFIED: Tier
TIER_SIMPLE: Tier
TIER_MEDIUM: Tier
TIER_COMPLEX: Tier
CACHE_STATUS_UNSPECIFIED: CacheStatus
CACHE_STATUS_MISS: CacheStatus
CACHE_STATUS_EXACT_HIT: CacheStatus
CACHE_STATUS_SEMANTIC_HIT: CacheStatus
CACHE_STATUS_BYPASSED: CacheStatus
CACHE_STATUS_UNAVAILABLE: CacheStatus
CACHE_STATUS_SHARED: CacheStatus
FEEDBACK_RATING_UNSPECIFIED: FeedbackRating
FEEDBACK_RATING_GOOD: FeedbackRating
FEEDBACK_RATING_BAD: FeedbackRating
CHECK_STATUS_UNSPECIFIED: CheckStatus
CHECK_STATUS_OK: CheckStatus
CHECK_STATUS_DEGRADED: CheckStatus
CHECK_STATUS_FAILING: CheckStatus

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("query", "tenant", "user", "system_prompt", "conversation", "temperature", "max_tokens", "tier", "skip_cache")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SKIP_CACHE_FIELD_NUMBER: _ClassVar[int]
    query: str
    tenant: str
    user: str
    system_prompt: str
    conversation: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    temperature: float
    max_tokens: int
    tier: Tier
    skip_cache: bool
    def __init__(self, query: _Optional[str] = ..., tenant: _Optional[str] = ..., user: _Optional[str] = ..., system_prompt: _Optional[str] = ..., conversation: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., temperature: _Optional[float] = ..., max_tokens: _Optional[int] = ..., tier: _Optional[_Union[Tier, str]] = ..., skip_cache: _Optional[bool] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("answer", "tier", "model", "cache_status", "similarity", "usage", "cost_usd", "latency_ms", "request_id", "finish_reason", "cache_entry_id", "baseline_cost_usd", "degraded")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CACHE_STATUS_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    CACHE_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    BASELINE_COST_USD_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    answer: str
    tier: Tier
    model: str
    cache_status: CacheStatus
    similarity: float
    usage: Usage
    cost_usd: float
    latency_ms: float
    request_id: str
    finish_reason: str
    cache_entry_id: str
    baseline_cost_usd: float
    degraded: bool
    def __init__(self, answer: _Optional[str] = ..., tier: _Optional[_Union[Tier, str]] = ..., model: _Optional[str] = ..., cache_status: _Optional[_Union[CacheStatus, str]] = ..., similarity: _Optional[float] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., cost_usd: _Optional[float] = ..., latency_ms: _Optional[float] = ..., request_id: _Optional[str] = ..., finish_reason: _Optional[str] = ..., cache_entry_id: _Optional[str] = ..., baseline_cost_usd: _Optional[float] = ..., degraded: _Optional[bool] = ...) -> None: ...

class RouteStreamEvent(_message.Message):
    __slots__ = ("delta", "summary")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    delta: str
    summary: RouteResponse
    def __init__(self, delta: _Optional[str] = ..., summary: _Optional[_Union[RouteResponse, _Mapping]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: str
    def __init__(self, query: _Optional[str] = ...) -> None: ...

class TierProbability(_message.Message):
    __slots__ = ("tier", "probability")
    TIER_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    tier: Tier
    probability: float
    def __init__(self, tier: _Optional[_Union[Tier, str]] = ..., probability: _Optional[float] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("tier", "probabilities", "classifier_version")
    TIER_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_VERSION_FIELD_NUMBER: _ClassVar[int]
    tier: Tier
    probabilities: _containers.RepeatedCompositeFieldContainer[TierProbability]
    classifier_version: str
    def __init__(self, tier: _Optional[_Union[Tier, str]] = ..., probabilities: _Optional[_Iterable[_Union[TierProbability, _Mapping]]] = ..., classifier_version: _Optional[str] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("tenant", "request_id", "cache_entry_id", "rating")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CACHE_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    request_id: str
    cache_entry_id: str
    rating: FeedbackRating
    def __init__(self, tenant: _Optional[str] = ..., request_id: _Optional[str] = ..., cache_entry_id: _Optional[str] = ..., rating: _Optional[_Union[FeedbackRating, str]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("cache_entry_id", "removed")
    CACHE_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    cache_entry_id: str
    removed: bool
    def __init__(self, cache_entry_id: _Optional[str] = ..., removed: _Optional[bool] = ...) -> None: ...

class ReloadClassifierRequest(_message.Message):
    __slots__ = ("artifact_dir",)
    ARTIFACT_DIR_FIELD_NUMBER: _ClassVar[int]
    artifact_dir: str
    def __init__(self, artifact_dir: _Optional[str] = ...) -> None: ...

class ReloadClassifierResponse(_message.Message):
    __slots__ = ("classifier_version", "previous_classifier_version")
    CLASSIFIER_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_CLASSIFIER_VERSION_FIELD_NUMBER: _ClassVar[int]
    classifier_version: str
    previous_classifier_version: str
    def __init__(self, classifier_version: _Optional[str] = ..., previous_classifier_version: _Optional[str] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthCheck(_message.Message):
    __slots__ = ("name", "status", "detail", "latency_ms", "critical")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: CheckStatus
    detail: str
    latency_ms: float
    critical: bool
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[CheckStatus, str]] = ..., detail: _Optional[str] = ..., latency_ms: _Optional[float] = ..., critical: _Optional[bool] = ...) -> None: ...

class HealthReport(_message.Message):
    __slots__ = ("status", "serving", "checks")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    status: CheckStatus
    serving: bool
    checks: _containers.RepeatedCompositeFieldContainer[HealthCheck]
    def __init__(self, status: _Optional[_Union[CheckStatus, str]] = ..., serving: _Optional[bool] = ..., checks: _Optional[_Iterable[_Union[HealthCheck, _Mapping]]] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("path", "requests", "size_bytes", "created_at")
    PATH_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    path: str
    requests: int
    size_bytes: int
    created_at: float
    def __init__(self, path: _Optional[str] = ..., requests: _Optional[int] = ..., size_bytes: _Optional[int] = ..., created_at: _Optional[float] = ...) -> None: ...
