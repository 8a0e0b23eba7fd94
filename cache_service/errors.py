"""Exception tree of the cache service and the gRPC status code of each exception.

Domain modules raise these exceptions, and only the servicer turns them into statuses,
through ``STATUS_CODES``.
"""

from __future__ import annotations

import grpc


class CacheError(Exception):
    """Base class of every error the cache service raises on purpose."""


class SettingsError(CacheError):
    """A setting is missing, has the wrong type or is out of range."""


class InvalidRequestError(CacheError):
    """A request breaks a rule. The message names the field, the rule and the fix."""


class NotReadyError(CacheError):
    """The embedding model or the index is still loading."""


class EmbeddingError(CacheError):
    """The embedding model failed on an input."""


class EntryNotFoundError(CacheError):
    """No entry with the requested id belongs to the caller's tenant."""


class StorageError(CacheError):
    """The durable entry store failed to read or write."""


class IndexVersionError(CacheError):
    """The stored entries were embedded by a different model or dimension."""


class AuthenticationError(CacheError):
    """The request has no API key, a key that no keys file entry matches, or a
    client certificate without an allowed name.
    """


class PermissionDeniedError(CacheError):
    """The API key may not act for the tenant named, or may not call the RPC."""


class GuardArtifactError(SettingsError):
    """The false-hit guard's verifier artifact is missing, altered or outdated."""


class BackupError(CacheError):
    """A snapshot or restore cannot run: not configured, invalid file, store in use."""


STATUS_CODES: dict[type[CacheError], grpc.StatusCode] = {
    CacheError: grpc.StatusCode.INTERNAL,
    SettingsError: grpc.StatusCode.INTERNAL,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    NotReadyError: grpc.StatusCode.UNAVAILABLE,
    EmbeddingError: grpc.StatusCode.INTERNAL,
    EntryNotFoundError: grpc.StatusCode.NOT_FOUND,
    StorageError: grpc.StatusCode.UNAVAILABLE,
    IndexVersionError: grpc.StatusCode.FAILED_PRECONDITION,
    GuardArtifactError: grpc.StatusCode.FAILED_PRECONDITION,
    BackupError: grpc.StatusCode.FAILED_PRECONDITION,
    AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
}


def status_code_for(error: CacheError) -> grpc.StatusCode:
    """Return the status code of the most specific class of ``error`` in the table."""
    for klass in type(error).__mro__:
        if klass in STATUS_CODES:
            return STATUS_CODES[klass]
    return grpc.StatusCode.INTERNAL
