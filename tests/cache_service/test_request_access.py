"""Tests of RequestAccess, the key and rule checks both services' guards share."""

from __future__ import annotations

from pathlib import Path

import pytest
from querygate.cache.v1 import cache_pb2

from cache_service.access import RequestAccess, tenant_at
from cache_service.api_keys import KeyStore, Role, add_key

LOOKUP = "/querygate.cache.v1.CacheService/Lookup"
UNLISTED = "/querygate.cache.v1.CacheService/NotInRules"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class MissingKey(Exception):
    pass


class Forbidden(Exception):
    pass


class Access:
    """A RequestAccess over a fresh keys file, recording what it annotates."""

    def __init__(self, keys_path: Path, keys: bool = True) -> None:
        self.tenant_key, self.tenant_key_id = add_key(keys_path, "acme", Role.TENANT)
        self.admin_key, _ = add_key(keys_path, "ops", Role.ADMIN)
        self.annotations: list[dict[str, object]] = []
        self.access = RequestAccess(
            KeyStore(keys_path) if keys else None,
            {LOOKUP: tenant_at("scope", "tenant")},
            unauthenticated=MissingKey,
            permission_denied=Forbidden,
            annotate=lambda **fields: self.annotations.append(fields),
        )


def _bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def _lookup(tenant: str) -> cache_pb2.LookupRequest:
    return cache_pb2.LookupRequest(query="q", scope=cache_pb2.Scope(tenant=tenant))


@pytest.fixture
def access(tmp_path: Path) -> Access:
    return Access(tmp_path / "keys.toml")


def test_admit_fills_empty_tenant_from_key(access: Access) -> None:
    request = access.access.admit(
        LOOKUP, _bearer(access.tenant_key), lambda: _lookup("")
    )

    assert request.scope.tenant == "acme"
    assert access.annotations == [{"key_id": access.tenant_key_id}]


def test_admit_raises_unauthenticated_without_key(access: Access) -> None:
    with pytest.raises(MissingKey):
        access.access.admit(LOOKUP, [], lambda: _lookup("acme"))


def test_admit_raises_unauthenticated_for_unknown_key(access: Access) -> None:
    with pytest.raises(MissingKey):
        access.access.admit(LOOKUP, _bearer("qg_not_a_key"), lambda: _lookup(""))


def test_admit_denies_other_tenant(access: Access) -> None:
    with pytest.raises(Forbidden, match=r"scope\.tenant 'globex' differs"):
        access.access.admit(
            LOOKUP, _bearer(access.tenant_key), lambda: _lookup("globex")
        )


def test_unlisted_method_needs_admin_key(access: Access) -> None:
    with pytest.raises(Forbidden):
        access.access.admit(UNLISTED, _bearer(access.tenant_key), lambda: _lookup(""))

    admitted = access.access.admit(
        UNLISTED, _bearer(access.admin_key), lambda: _lookup("")
    )
    assert admitted.scope.tenant == ""


def test_authentication_runs_before_parse(access: Access) -> None:
    def parse() -> cache_pb2.LookupRequest:
        raise AssertionError("parsed a request that has no key")

    with pytest.raises(MissingKey):
        access.access.admit(LOOKUP, None, parse)


def test_health_check_needs_no_key(access: Access) -> None:
    assert not access.access.needs_key(HEALTH_CHECK)
    assert access.access.principal(HEALTH_CHECK, None) is None
    assert access.access.needs_key(LOOKUP)


def test_without_key_store_only_parse_runs(tmp_path: Path) -> None:
    access = Access(tmp_path / "keys.toml", keys=False)

    request = access.access.admit(LOOKUP, None, lambda: _lookup("globex"))

    assert request.scope.tenant == "globex"
    assert not access.access.needs_key(LOOKUP)
    assert access.annotations == []
