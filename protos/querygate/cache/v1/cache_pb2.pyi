from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HitLayer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HIT_LAYER_UNSPECIFIED: _ClassVar[HitLayer]
    HIT_LAYER_EXACT: _ClassVar[HitLayer]
    HIT_LAYER_SEMANTIC: _ClassVar[HitLayer]

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
HIT_LAYER_UNSPECIFIED: HitLayer
HIT_LAYER_EXACT: HitLayer
HIT_LAYER_SEMANTIC: HitLayer
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

class GenerationParams(_message.Message):
    __slots__ = ("temperature", "max_tokens")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    max_tokens: int
    def __init__(self, temperature: _Optional[float] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class Scope(_message.Message):
    __slots__ = ("tenant", "model", "system_prompt", "conversation", "params")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    model: str
    system_prompt: str
    conversation: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    params: GenerationParams
    def __init__(self, tenant: _Optional[str] = ..., model: _Optional[str] = ..., system_prompt: _Optional[str] = ..., conversation: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., params: _Optional[_Union[GenerationParams, _Mapping]] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("query", "scope", "min_similarity")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    MIN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    query: str
    scope: Scope
    min_similarity: float
    def __init__(self, query: _Optional[str] = ..., scope: _Optional[_Union[Scope, _Mapping]] = ..., min_similarity: _Optional[float] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("hit", "layer", "similarity", "entry_id", "answer", "metadata", "age_s")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HIT_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    hit: bool
    layer: HitLayer
    similarity: float
    entry_id: str
    answer: str
    metadata: _containers.ScalarMap[str, str]
    age_s: float
    def __init__(self, hit: _Optional[bool] = ..., layer: _Optional[_Union[HitLayer, str]] = ..., similarity: _Optional[float] = ..., entry_id: _Optional[str] = ..., answer: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., age_s: _Optional[float] = ...) -> None: ...

class StoreRequest(_message.Message):
    __slots__ = ("query", "scope", "answer", "metadata", "finish_reason")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    query: str
    scope: Scope
    answer: str
    metadata: _containers.ScalarMap[str, str]
    finish_reason: str
    def __init__(self, query: _Optional[str] = ..., scope: _Optional[_Union[Scope, _Mapping]] = ..., answer: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., finish_reason: _Optional[str] = ...) -> None: ...

class StoreResponse(_message.Message):
    __slots__ = ("stored", "entry_id", "reason")
    STORED_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    entry_id: str
    reason: str
    def __init__(self, stored: _Optional[bool] = ..., entry_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class InvalidateRequest(_message.Message):
    __slots__ = ("entry_id", "tenant", "query", "entry_tenant")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    ENTRY_TENANT_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    tenant: str
    query: QueryTarget
    entry_tenant: str
    def __init__(self, entry_id: _Optional[str] = ..., tenant: _Optional[str] = ..., query: _Optional[_Union[QueryTarget, _Mapping]] = ..., entry_tenant: _Optional[str] = ...) -> None: ...

class QueryTarget(_message.Message):
    __slots__ = ("query", "scope")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    query: str
    scope: Scope
    def __init__(self, query: _Optional[str] = ..., scope: _Optional[_Union[Scope, _Mapping]] = ...) -> None: ...

class InvalidateResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("entries", "exact_hits", "semantic_hits", "misses", "stores", "evictions", "expirations", "index_vectors", "embedding_model", "embedding_dimension", "min_cosine_similarity", "feedback_good", "feedback_bad")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    EXACT_HITS_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    STORES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRATIONS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VECTORS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    MIN_COSINE_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_GOOD_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_BAD_FIELD_NUMBER: _ClassVar[int]
    entries: int
    exact_hits: int
    semantic_hits: int
    misses: int
    stores: int
    evictions: int
    expirations: int
    index_vectors: int
    embedding_model: str
    embedding_dimension: int
    min_cosine_similarity: float
    feedback_good: int
    feedback_bad: int
    def __init__(self, entries: _Optional[int] = ..., exact_hits: _Optional[int] = ..., semantic_hits: _Optional[int] = ..., misses: _Optional[int] = ..., stores: _Optional[int] = ..., evictions: _Optional[int] = ..., expirations: _Optional[int] = ..., index_vectors: _Optional[int] = ..., embedding_model: _Optional[str] = ..., embedding_dimension: _Optional[int] = ..., min_cosine_similarity: _Optional[float] = ..., feedback_good: _Optional[int] = ..., feedback_bad: _Optional[int] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("entry_id", "tenant", "rating")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    tenant: str
    rating: FeedbackRating
    def __init__(self, entry_id: _Optional[str] = ..., tenant: _Optional[str] = ..., rating: _Optional[_Union[FeedbackRating, str]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    def __init__(self, removed: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("path", "entries", "vectors", "size_bytes", "created_at")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    path: str
    entries: int
    vectors: int
    size_bytes: int
    created_at: float
    def __init__(self, path: _Optional[str] = ..., entries: _Optional[int] = ..., vectors: _Optional[int] = ..., size_bytes: _Optional[int] = ..., created_at: _Optional[float] = ...) -> None: ...
