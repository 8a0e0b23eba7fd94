"""Allow-list of client certificate names under mutual TLS, shared by both services.

With mutual TLS the TLS handshake accepts any client certificate that the client
CA signed. ``ClientNameCheck`` narrows that to certificates issued for given
names: a call passes when one DNS or URI subject alternative name, or the common
name, of the peer's certificate equals a name in ``tls_client_allowed_names``.
Names are compared as exact, case-sensitive strings, and a ``*`` in a name is
not a wildcard.

Each service's request guard reads the peer's names from gRPC's auth context
(``context.auth_context()``) and rejects a call without an allowed name with
UNAUTHENTICATED, as it rejects an unknown API key. Nothing here imports grpc, so
settings can validate the list without it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cache_service.log_throttle import LogThrottle

logger = logging.getLogger(__name__)

# Auth context properties that carry the peer certificate's names in gRPC Python
# 1.85: DNS SANs, URI SANs and the subject's common name. IP and e-mail SANs are
# in other properties and never match.
NAME_PROPERTIES = ("peer_dns", "peer_uri", "x509_common_name")
# The environment variable of the cache lists names separated by commas.
NAME_SEPARATOR = ","
MAX_NAME_CHARS = 1024

REJECTED_MESSAGE = (
    "the client certificate is signed by a trusted CA, but none of its names is "
    "allowed to call this service. Use a client certificate issued for a name "
    "that the operator allows."
)


@dataclass(frozen=True)
class NameProblem:
    """Reason an allowed-names setting is invalid, for a settings error message."""

    rule: str
    value: object
    fix: str


def allowed_names_problem(names: object) -> NameProblem | None:
    """Return why ``names`` is not a valid allow-list, or None.

    An empty list is valid and turns the check off.
    """
    if isinstance(names, str) or not isinstance(names, Sequence):
        return NameProblem(
            "must be a list of names",
            names,
            'Write a list such as ["querygate-router"], or leave it empty.',
        )
    for name in names:
        if not isinstance(name, str):
            return NameProblem(
                "must contain strings only",
                name,
                "Quote each certificate name.",
            )
        if not name or name != name.strip():
            return NameProblem(
                "must contain names without leading or trailing whitespace, "
                "and no empty names",
                name,
                "Remove the blanks or the empty entry.",
            )
        if NAME_SEPARATOR in name or not name.isprintable():
            return NameProblem(
                "must contain names without commas or control characters",
                name,
                "Use the DNS name, URI or common name that the client "
                "certificate carries.",
            )
        if len(name) > MAX_NAME_CHARS:
            return NameProblem(
                f"must contain names of at most {MAX_NAME_CHARS} characters",
                f"{name[:40]}... ({len(name)} characters)",
                "Use the DNS name, URI or common name of the client certificate.",
            )
    return None


def parse_name_list(text: str) -> tuple[str, ...]:
    """Split the comma-separated names of an environment variable."""
    return tuple(part.strip() for part in text.split(NAME_SEPARATOR))


def presented_names(auth_context: Mapping[str, Iterable[bytes]]) -> tuple[str, ...]:
    """Return the DNS and URI SANs and the common name of the peer's certificate.

    Returns an empty tuple for a call without a client certificate. Bytes that
    are not UTF-8 are decoded with replacement characters, which match no
    allowed name.
    """
    names: list[str] = []
    for key in NAME_PROPERTIES:
        for value in auth_context.get(key, ()):
            names.append(value.decode("utf-8", errors="replace"))
    return tuple(names)


class ClientNameCheck:
    """Rejects calls whose client certificate carries none of the allowed names.

    Rejections are logged as ``client_certificate_rejected`` warnings with the
    peer's names, at most one line per ``log_interval_s`` with the number of
    lines left out, because a client with a wrong certificate retries.
    """

    def __init__(self, allowed: Iterable[str], log_interval_s: float = 10.0) -> None:
        self._allowed = frozenset(allowed)
        self._throttle = LogThrottle(log_interval_s)

    def rejection(
        self, method: str, auth_context: Mapping[str, Iterable[bytes]]
    ) -> str | None:
        """Return the client-facing message when the call must be rejected, or None.

        The message does not name the allowed names.
        """
        names = presented_names(auth_context)
        if not self._allowed.isdisjoint(names):
            return None
        self._log(method, names)
        return REJECTED_MESSAGE

    def _log(self, method: str, names: tuple[str, ...]) -> None:
        suppressed = self._throttle.admit()
        if suppressed is None:
            return
        logger.warning(
            "client_certificate_rejected",
            extra={
                "method": method,
                "code": "UNAUTHENTICATED",
                "presented_names": list(names),
                "suppressed_since_last": suppressed,
                "remedy": "add one of presented_names to tls_client_allowed_names, "
                "or give the client a certificate with an allowed name",
            },
        )


def client_name_check(allowed: Sequence[str]) -> ClientNameCheck | None:
    """Return the check for ``allowed``, or None when the list is empty."""
    return ClientNameCheck(allowed) if allowed else None
