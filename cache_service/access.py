"""Access rules per RPC, shared by the request guards of both services.

A rule gets the caller's principal and the parsed request, may fill an empty
tenant field with the key's tenant, and returns a ``Denial`` or None. Each
service's guard turns a denial into its own error class. Nothing here imports
grpc, so the rules are tested without a server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from cache_service.api_keys import (
    MISSING_KEY_MESSAGE,
    UNKNOWN_KEY_MESSAGE,
    KeyStore,
    Principal,
    Role,
    admin_problem,
    bearer_key,
    tenant_problem,
)
from cache_service.log_throttle import LogThrottle

logger = logging.getLogger(__name__)

# The standard gRPC health checks need no key.
PUBLIC_METHODS = frozenset(
    {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"}
)
REFLECTION_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


@dataclass(frozen=True)
class Denial:
    """A rejected request: ``authenticated`` False means no valid key."""

    authenticated: bool
    message: str


AccessRule = Callable[[Principal, Message], Denial | None]


def authenticate(
    keys: KeyStore, metadata: Iterable[tuple[str, str | bytes]]
) -> Principal | Denial:
    """Return the principal of the request's bearer key, or why there is none."""
    key = bearer_key(metadata)
    if key is None:
        return Denial(authenticated=False, message=MISSING_KEY_MESSAGE)
    principal = keys.authenticate(key)
    if principal is None:
        return Denial(authenticated=False, message=UNKNOWN_KEY_MESSAGE)
    return principal


def any_key(principal: Principal, request: Message) -> Denial | None:
    """Allow every caller with a valid key."""
    return None


def admin_only(method: str) -> AccessRule:
    """Allow only admin keys to call ``method``."""

    def rule(principal: Principal, request: Message) -> Denial | None:
        problem = admin_problem(principal, method)
        return None if problem is None else Denial(True, problem)

    return rule


def service_or_admin(method: str) -> AccessRule:
    """Allow service and admin keys, for RPCs that report on every tenant."""

    def rule(principal: Principal, request: Message) -> Denial | None:
        if principal.acts_for_any_tenant:
            return None
        return Denial(
            True,
            f"{method} reports on every tenant and needs a service or admin API "
            f"key; the key (id {principal.key_id}) has the role tenant.",
        )

    return rule


def tenant_at(*path: str) -> AccessRule:
    """Check the tenant field at ``path`` in the request against the key.

    An empty field takes the key's tenant. A different tenant is allowed only for
    service and admin keys.
    """

    def rule(principal: Principal, request: Message) -> Denial | None:
        return check_tenant_field(principal, request, path)

    return rule


def check_tenant_field(
    principal: Principal, request: Message, path: tuple[str, ...]
) -> Denial | None:
    """Apply the tenant rule of ``tenant_at`` to the field at ``path``."""
    parent = request
    for name in path[:-1]:
        parent = getattr(parent, name)
    requested = getattr(parent, path[-1])
    problem = tenant_problem(principal, requested, ".".join(path))
    if problem is not None:
        return Denial(True, problem)
    if not requested:
        setattr(parent, path[-1], principal.tenant)
    return None


def is_admin(principal: Principal) -> bool:
    """True for admin keys."""
    return principal.role is Role.ADMIN


class RejectionLog:
    """Logs rejected requests as ``auth_rejected`` warnings, one per interval.

    Requests without a valid key can arrive in floods, so the lines in between are
    counted and the count is logged with the next line.
    """

    def __init__(self, interval_s: float = 10.0) -> None:
        self._throttle = LogThrottle(interval_s)

    def record(self, method: str, denial: Denial, key_id: str | None) -> None:
        suppressed = self._throttle.admit()
        if suppressed is None:
            return
        logger.warning(
            "auth_rejected",
            extra={
                "method": method,
                "code": "PERMISSION_DENIED"
                if denial.authenticated
                else "UNAUTHENTICATED",
                "key_id": key_id,
                "suppressed_since_last": suppressed,
            },
        )


class RequestAccess:
    """Authentication and authorization of one service's RPCs, for its request guard.

    The guard does the grpc part (wrapping handlers, aborting calls) and passes in
    its service's error classes, so ``admit`` raises errors that the service's
    status table already maps. ``annotate`` adds the caller's key id to the RPC's
    log line. Health checks (``PUBLIC_METHODS``) need no key, and without a key
    store no method does.
    """

    def __init__(
        self,
        keys: KeyStore | None,
        rules: Mapping[str, AccessRule],
        *,
        unauthenticated: Callable[[str], Exception],
        permission_denied: Callable[[str], Exception],
        annotate: Callable[..., None],
    ) -> None:
        self._keys = keys
        self._rules = rules
        self._unauthenticated = unauthenticated
        self._permission_denied = permission_denied
        self._annotate = annotate
        self._rejections = RejectionLog()

    def needs_key(self, method: str) -> bool:
        """Return True when calls to the full method name ``method`` need a key."""
        return self._keys is not None and method not in PUBLIC_METHODS

    def principal(
        self, method: str, metadata: Iterable[tuple[str, str | bytes]] | None
    ) -> Principal | None:
        """Return the caller's principal, or None when ``method`` needs no key.

        Raises the error that ``unauthenticated`` builds when the key is missing
        or unknown.
        """
        if self._keys is None or method in PUBLIC_METHODS:
            return None
        result = authenticate(self._keys, metadata or ())
        if isinstance(result, Denial):
            self._raise_denial(method, result, None)
        assert isinstance(result, Principal)
        # The key id (never the key) goes into the RPC's log line, so operators
        # can see which keys are in use before they revoke one.
        self._annotate(key_id=result.key_id)
        return result

    def admit(
        self,
        method: str,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        parse: Callable[[], Any],
    ) -> Any:
        """Authenticate the caller, parse the request with ``parse``, apply the rule.

        A method missing from the rules needs an admin key. Returns the parsed
        request, in which the rule may have filled an empty tenant field with the
        key's tenant. Raises the error that ``unauthenticated`` or
        ``permission_denied`` builds, or what ``parse`` raises for a malformed
        request.
        """
        principal = self.principal(method, metadata)
        request = parse()
        if principal is not None:
            rule = self._rules.get(method, admin_only(method.rpartition("/")[2]))
            self._raise_denial(method, rule(principal, request), principal)
        return request

    def _raise_denial(
        self, method: str, denial: Denial | None, principal: Principal | None
    ) -> None:
        if denial is None:
            return
        key_id = principal.key_id if principal is not None else None
        self._rejections.record(method, denial, key_id)
        if denial.authenticated:
            raise self._permission_denied(denial.message)
        raise self._unauthenticated(denial.message)
