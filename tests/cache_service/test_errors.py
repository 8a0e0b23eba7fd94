"""Tests of the error table: every exception class has a gRPC status code."""

from __future__ import annotations

import grpc

from cache_service import errors


def _all_subclasses(klass: type) -> set[type]:
    found: set[type] = set()
    child: type
    for child in klass.__subclasses__():
        found.add(child)
        found |= _all_subclasses(child)
    return found


def test_every_exception_class_has_status_code() -> None:
    classes = _all_subclasses(errors.CacheError) | {errors.CacheError}
    missing = sorted(k.__name__ for k in classes if k not in errors.STATUS_CODES)
    assert not missing


def test_invalid_request_maps_to_invalid_argument() -> None:
    code = errors.status_code_for(errors.InvalidRequestError("query is empty"))
    assert code is grpc.StatusCode.INVALID_ARGUMENT


def test_not_ready_maps_to_unavailable() -> None:
    code = errors.status_code_for(errors.NotReadyError("loading"))
    assert code is grpc.StatusCode.UNAVAILABLE
