"""Tests of the router's exception tree and its gRPC status table."""

from __future__ import annotations

import grpc

from router_service import errors


def all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found.add(sub)
        found |= all_subclasses(sub)
    return found


def test_every_error_class_is_in_status_table() -> None:
    missing = all_subclasses(errors.RouterError) - set(errors.GRPC_STATUS_BY_ERROR)

    assert not missing, f"add these to GRPC_STATUS_BY_ERROR: {missing}"


def test_invalid_request_maps_to_invalid_argument() -> None:
    error = errors.InvalidRequestError("query", "must not be empty", "Send text.")

    assert errors.grpc_status_for(error) is grpc.StatusCode.INVALID_ARGUMENT
    assert str(error) == "query: must not be empty. Send text."


def test_http_error_retryability_follows_status() -> None:
    assert errors.ModelHTTPError("m", 503).retryable
    assert errors.ModelHTTPError("m", 429).retryable
    assert not errors.ModelHTTPError("m", 400).retryable
    assert not errors.ModelHTTPError("m", 404).retryable
