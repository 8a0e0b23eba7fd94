"""Server tests of the character rules on queries, model names and metadata keys."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service.server import RunningServer

ACME = cache_pb2.Scope(tenant="acme", model="auto")


@pytest.fixture
def stub(real_server: RunningServer) -> Iterator[cache_pb2_grpc.CacheServiceStub]:
    with grpc.insecure_channel(real_server.target) as channel:
        yield cache_pb2_grpc.CacheServiceStub(channel)


def _store_request(
    query: str = "Who wrote Hamlet?",
    scope: cache_pb2.Scope = ACME,
    metadata: dict[str, str] | None = None,
) -> cache_pb2.StoreRequest:
    return cache_pb2.StoreRequest(
        query=query,
        scope=scope,
        answer="Shakespeare",
        finish_reason="stop",
        metadata=metadata or {"model": "smollm2"},
    )


def _rejection(call: object, request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request)  # type: ignore[operator]
    return raised.value


INVISIBLE_QUERIES = [
    pytest.param("\x00", id="nul"),
    pytest.param("\x00\x01\x1b", id="controls"),
    pytest.param("\u200b", id="zero-width-space"),
    pytest.param("\ufeff\u200b \t", id="bom-and-whitespace"),
    pytest.param("\u2060\u00ad", id="word-joiner-soft-hyphen"),
    pytest.param("\u2800", id="braille-blank"),
    pytest.param("\u3164 \u115f", id="hangul-fillers"),
    pytest.param("\u0301\u034f\ufe0f", id="lone-combining-marks"),
    pytest.param("\u0378\uffff", id="unassigned"),
    pytest.param("\ue000", id="private-use"),
]


@pytest.mark.parametrize("query", INVISIBLE_QUERIES)
def test_store_rejects_invisible_query(
    stub: cache_pb2_grpc.CacheServiceStub, query: str
) -> None:
    error = _rejection(stub.Store, _store_request(query=query))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "query must contain a visible character" in error.details()  # type: ignore[attr-defined]
    assert "Send the question" in error.details()  # type: ignore[attr-defined]
    assert stub.Stats(cache_pb2.StatsRequest()).entries == 0


@pytest.mark.parametrize("query", INVISIBLE_QUERIES)
def test_lookup_rejects_invisible_query(
    stub: cache_pb2_grpc.CacheServiceStub, query: str
) -> None:
    error = _rejection(stub.Lookup, cache_pb2.LookupRequest(query=query, scope=ACME))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "query must contain a visible character" in error.details()  # type: ignore[attr-defined]


def test_store_rejects_control_character_inside_query(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    error = _rejection(stub.Store, _store_request(query="Who wrote\x00 Hamlet?"))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert (
        "query must not contain control characters other than tab, newline and "
        "carriage return; got U+0000 at position 9" in error.details()  # type: ignore[attr-defined]
    )
    assert "Remove the control characters" in error.details()  # type: ignore[attr-defined]


def test_invalidate_rejects_invisible_target_query(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    target = cache_pb2.QueryTarget(query="\ufeff", scope=ACME)
    error = _rejection(stub.Invalidate, cache_pb2.InvalidateRequest(query=target))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "query.query must contain a visible character" in error.details()  # type: ignore[attr-defined]


def test_store_keeps_tabs_newlines_and_format_characters(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    query = (
        "Summarize:\r\n\tthe word\u200bjoiner and \u05e9\u05dc\u05d5\u05dd\u200f, "
        "cafe\u0301 \U0001f600\ufe0f"
    )
    stored = stub.Store(_store_request(query=query))
    found = stub.Lookup(cache_pb2.LookupRequest(query=query, scope=ACME))

    assert stored.stored, stored.reason
    assert found.hit
    assert found.answer == "Shakespeare"


@pytest.mark.parametrize(
    ("model", "code_point"),
    [
        pytest.param("auto\n", "U+000A at position 4", id="newline"),
        pytest.param("gpt\x00", "U+0000 at position 3", id="nul"),
        pytest.param("local simple", "U+0020 at position 5", id="space"),
        pytest.param("\u200bauto", "U+200B at position 0", id="zero-width"),
    ],
)
def test_store_rejects_unprintable_model(
    stub: cache_pb2_grpc.CacheServiceStub, model: str, code_point: str
) -> None:
    scope = cache_pb2.Scope(tenant="acme", model=model)
    error = _rejection(stub.Store, _store_request(scope=scope))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert (
        "scope.model must contain only printable characters and no whitespace; "
        f"got {code_point}" in error.details()  # type: ignore[attr-defined]
    )
    assert "Send the tier, the model name or auto" in error.details()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        pytest.param(
            {"": "x"}, "metadata keys must not be empty; got an empty key", id="empty"
        ),
        pytest.param(
            {"model\n": "x"},
            "metadata key 'model\\n' must contain only printable characters and no "
            "whitespace; got U+000A at position 5",
            id="newline",
        ),
        pytest.param(
            {"mo\x1bdel": "x"},
            "metadata key 'mo\\x1bdel' must contain only printable characters",
            id="escape",
        ),
    ],
)
def test_store_rejects_bad_metadata_key(
    stub: cache_pb2_grpc.CacheServiceStub, metadata: dict[str, str], message: str
) -> None:
    error = _rejection(stub.Store, _store_request(metadata=metadata))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert message in error.details()  # type: ignore[attr-defined]
    assert stub.Stats(cache_pb2.StatsRequest()).entries == 0


def test_store_rejects_control_character_in_system_prompt(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    scope = cache_pb2.Scope(tenant="acme", model="auto", system_prompt="Be\x1b brief")

    error = _rejection(stub.Store, _store_request(scope=scope))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "system_prompt must not contain control characters" in error.details()  # type: ignore[attr-defined]
    assert "U+001B at position 2" in error.details()  # type: ignore[attr-defined]
