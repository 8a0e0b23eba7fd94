"""The router's exception tree and the one table that maps it to gRPC status codes.

Domain modules raise these exceptions. Only the servicer turns them into gRPC
statuses, through `GRPC_STATUS_BY_ERROR`, so the mapping lives in one place.
"""

from __future__ import annotations

import grpc


class RouterError(Exception):
    """Base class of every error the router raises on purpose."""


class ConfigError(RouterError):
    """The configuration file or an environment variable is invalid."""


class InvalidRequestError(RouterError):
    """A request field breaks a rule; the message names the field, rule and fix."""

    def __init__(self, field: str, rule: str, fix: str) -> None:
        super().__init__(f"{field}: {rule}. {fix}")
        self.field = field


class PromptTooLargeError(InvalidRequestError):
    """The prompt's token count exceeds every candidate model's context window."""


class NotReadyError(RouterError):
    """The router is still loading the classifier."""


class ClassifierRejectedError(RouterError):
    """A classifier artifact failed its checks, so the current classifier stays."""


class ModelCallError(RouterError):
    """A model backend call failed.

    `retryable` is True when another attempt may succeed.
    `retry_after_s` is the server's Retry-After hint, when it sent one.
    """

    retryable: bool = False

    def __init__(
        self,
        model: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        reported_input_tokens: int = 0,
        reported_output_tokens: int = 0,
    ) -> None:
        super().__init__(f"model {model!r}: {message}")
        self.model = model
        self.retry_after_s = retry_after_s
        self.reported_input_tokens = reported_input_tokens
        self.reported_output_tokens = reported_output_tokens


class ModelTimeoutError(ModelCallError):
    """The model did not answer within its timeout."""

    retryable = True


class ModelConnectionError(ModelCallError):
    """The model server could not be reached."""

    retryable = True


class ModelHTTPError(ModelCallError):
    """The model server returned an HTTP error status."""

    def __init__(
        self,
        model: str,
        status_code: int,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(
            model, f"HTTP status {status_code}", retry_after_s=retry_after_s
        )
        self.status_code = status_code
        # 408 and 429 are transient by definition; 5xx are server-side faults.
        self.retryable = status_code in (408, 429) or status_code >= 500


class ModelResponseError(ModelCallError):
    """The model server returned a body that is not a valid completion."""


class ModelRefusedError(ModelCallError):
    """The model refused the request (a content-policy refusal)."""


class CircuitOpenError(ModelCallError):
    """The model's circuit breaker is open, so the call was not attempted."""


class NotFoundError(RouterError):
    """The request or cache entry that a caller named does not exist for its tenant."""


class CacheUnavailableError(RouterError):
    """The cache service did not answer; the router serves the request uncached."""


class NoModelAvailableError(RouterError):
    """Every model in the fallback chain failed and no degraded answer exists."""


class DeadlineExceededError(RouterError):
    """The caller's deadline passed before a model answered."""


class RateLimitedError(RouterError):
    """A request or token rate limit was exceeded.

    `retry_after_s` is the time until the limit's window resets.
    """

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AuthenticationError(RouterError):
    """The request has no API key, a key that no keys file entry matches, or a
    client certificate without an allowed name.
    """


class PermissionDeniedError(RouterError):
    """The API key may not act for the tenant named, or may not call the RPC."""


class BudgetExceededError(RouterError):
    """The tenant or user has spent its daily budget."""


class StorageError(RouterError):
    """The cost ledger's file was removed or replaced, or rejects writes."""


class BackupError(RouterError):
    """A ledger snapshot or restore cannot run: not configured, invalid, in use."""


GRPC_STATUS_BY_ERROR: dict[type[RouterError], grpc.StatusCode] = {
    RouterError: grpc.StatusCode.INTERNAL,
    ConfigError: grpc.StatusCode.INTERNAL,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    PromptTooLargeError: grpc.StatusCode.INVALID_ARGUMENT,
    NotReadyError: grpc.StatusCode.UNAVAILABLE,
    ClassifierRejectedError: grpc.StatusCode.FAILED_PRECONDITION,
    ModelCallError: grpc.StatusCode.UNAVAILABLE,
    ModelTimeoutError: grpc.StatusCode.UNAVAILABLE,
    ModelConnectionError: grpc.StatusCode.UNAVAILABLE,
    ModelHTTPError: grpc.StatusCode.UNAVAILABLE,
    ModelResponseError: grpc.StatusCode.UNAVAILABLE,
    ModelRefusedError: grpc.StatusCode.FAILED_PRECONDITION,
    CircuitOpenError: grpc.StatusCode.UNAVAILABLE,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    CacheUnavailableError: grpc.StatusCode.UNAVAILABLE,
    NoModelAvailableError: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    RateLimitedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    BudgetExceededError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StorageError: grpc.StatusCode.UNAVAILABLE,
    BackupError: grpc.StatusCode.FAILED_PRECONDITION,
    AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
}


def grpc_status_for(error: RouterError) -> grpc.StatusCode:
    """Look up the status code of the most specific class in the table."""
    for cls in type(error).__mro__:
        if cls in GRPC_STATUS_BY_ERROR:
            return GRPC_STATUS_BY_ERROR[cls]  # type: ignore[index]
    return grpc.StatusCode.INTERNAL
