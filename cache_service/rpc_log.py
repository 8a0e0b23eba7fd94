"""Fields of the per-RPC ``rpc_completed`` log line, shared by both services.

The cache's sync interceptor and the router's grpc.aio interceptor wrap calls in
different ways. Both build the status code name, the logged ids and the line itself
with these functions, so the two services log the same fields in the same form.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

# Fields of every rpc_completed line, None where an RPC has no such value.
RPC_LOG_FIELDS = ("tenant", "tier", "model", "cache_status", "request_id", "error_id")
MAX_LOGGED_ID_CHARS = 128


def loggable_id(value: str) -> str:
    """Return an id from a request as it may appear in a log line.

    Requests are logged before validation, so an id can be huge or contain control
    characters: those are cut to `MAX_LOGGED_ID_CHARS` and escaped.
    """
    if len(value) <= MAX_LOGGED_ID_CHARS and value.isprintable():
        return value
    return ascii(value[:MAX_LOGGED_ID_CHARS])


def status_code_name(code: object, error: BaseException | None) -> str:
    """Return the name of the status an RPC ended with.

    `code` is what the servicer context's ``code()`` returned, and `error` is the
    exception that escaped the servicer, if any.
    """
    if isinstance(code, grpc.StatusCode):
        return code.name
    # grpc reports an exception that escapes the servicer as UNKNOWN.
    return grpc.StatusCode.UNKNOWN.name if error is not None else "OK"


def rpc_completed_fields(
    method: str, code: str, duration_s: float, fields: Mapping[str, object]
) -> dict[str, object]:
    """Build the ``extra`` fields of one rpc_completed line.

    Every name in `RPC_LOG_FIELDS` is present, None where the servicer did not
    annotate it. The servicer's other fields follow unchanged.
    """
    line: dict[str, object] = {name: fields.get(name) for name in RPC_LOG_FIELDS}
    line.update(fields)
    return {
        "method": method,
        "code": code,
        "duration_ms": round(duration_s * 1000, 2),
        **line,
    }
