"""Tests of the keys file, key checks, access rules and the key command."""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import pytest
from querygate.cache.v1 import cache_pb2

from cache_service import keys as keys_command
from cache_service.access import Denial, RejectionLog, authenticate, tenant_at
from cache_service.api_keys import (
    KeyFileError,
    KeyStore,
    Principal,
    Role,
    add_key,
    auth_setting_problem,
    bearer_key,
    hash_key,
    is_loopback_address,
    key_id_of,
    list_keys,
    revoke_key,
)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "keys.toml"


def test_add_key_stores_digest_not_key(keys_file: Path) -> None:
    key, key_id = add_key(keys_file, "acme", Role.TENANT)

    text = keys_file.read_text()
    assert key not in text
    assert hash_key(key) in text
    assert key_id == key_id_of(hash_key(key))
    assert key.startswith("qg_")
    assert len(key) > 40


def test_keys_file_is_private(keys_file: Path) -> None:
    add_key(keys_file, "acme", Role.TENANT)

    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600


def test_authenticate_returns_principal_of_key(keys_file: Path) -> None:
    tenant_key, _ = add_key(keys_file, "acme", Role.TENANT)
    admin_key, admin_id = add_key(keys_file, "ops", Role.ADMIN)
    store = KeyStore(keys_file)

    assert store.authenticate(admin_key) == Principal(admin_id, "ops", Role.ADMIN)
    principal = store.authenticate(tenant_key)
    assert principal is not None
    assert principal.tenant == "acme"
    assert principal.role is Role.TENANT


def test_authenticate_rejects_unknown_and_near_keys(keys_file: Path) -> None:
    key, _ = add_key(keys_file, "acme", Role.TENANT)
    store = KeyStore(keys_file)

    assert store.authenticate("qg_not-a-key") is None
    assert store.authenticate(key[:-1]) is None
    assert store.authenticate(key + "x") is None
    assert store.authenticate("") is None


def test_revoked_key_stops_working_after_reload(keys_file: Path) -> None:
    key, key_id = add_key(keys_file, "acme", Role.TENANT)
    store = KeyStore(keys_file, reload_interval_s=0.0)
    assert store.authenticate(key) is not None

    assert revoke_key(keys_file, key_id)
    assert store.authenticate(key) is None
    assert not revoke_key(keys_file, key_id)


def test_new_key_works_without_restart(keys_file: Path) -> None:
    add_key(keys_file, "acme", Role.TENANT)
    store = KeyStore(keys_file, reload_interval_s=0.0)

    key, _ = add_key(keys_file, "globex", Role.TENANT)

    principal = store.authenticate(key)
    assert principal is not None
    assert principal.tenant == "globex"


def test_invalid_reload_keeps_previous_keys(keys_file: Path) -> None:
    key, _ = add_key(keys_file, "acme", Role.TENANT)
    store = KeyStore(keys_file, reload_interval_s=0.0)

    keys_file.write_text("[keys.broken\n")
    # A different size and time make the change visible to the stat check.
    os.utime(keys_file, ns=(time.time_ns(), time.time_ns() + 10**9))

    assert store.authenticate(key) is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("keys = 3\n", "must be a table", id="keys-not-table"),
        pytest.param("[keys.a\n", "not valid TOML", id="bad-toml"),
        pytest.param(
            '[keys.a]\nsha256 = "ab"\ntenant = "t"\nrole = "tenant"\n',
            "sha256 must be 64 hex digits",
            id="short-digest",
        ),
        pytest.param(
            f'[keys.a]\nsha256 = "{"0" * 64}"\ntenant = ""\nrole = "tenant"\n',
            "tenant must be a non-empty string",
            id="empty-tenant",
        ),
        pytest.param(
            f'[keys.a]\nsha256 = "{"0" * 64}"\ntenant = "t"\nrole = "root"\n',
            "role must be one of",
            id="unknown-role",
        ),
    ],
)
def test_invalid_keys_file_is_rejected(
    keys_file: Path, text: str, message: str
) -> None:
    keys_file.write_text(text)

    with pytest.raises(KeyFileError, match=message):
        KeyStore(keys_file)


def test_missing_keys_file_names_command(keys_file: Path) -> None:
    with pytest.raises(KeyFileError, match=r"python -m cache_service\.keys add"):
        KeyStore(keys_file)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param((("authorization", "Bearer abc"),), "abc", id="bearer"),
        pytest.param((("authorization", "bearer  abc "),), "abc", id="lowercase"),
        pytest.param((("authorization", "Basic abc"),), None, id="other-scheme"),
        pytest.param((("authorization", "Bearer "),), None, id="empty"),
        pytest.param((("x-api-key", "abc"),), None, id="other-header"),
        pytest.param((), None, id="none"),
    ],
)
def test_bearer_key_reads_authorization(
    metadata: tuple[tuple[str, str], ...], expected: str | None
) -> None:
    assert bearer_key(metadata) == expected


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50052", True),
        ("127.0.0.2:0", True),
        ("localhost:1", True),
        ("[::1]:50052", True),
        ("0.0.0.0:50052", False),
        ("[::]:50052", False),
        ("10.1.2.3:50052", False),
        ("cache.internal:50052", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback_address(address) is loopback


def test_public_address_without_keys_is_rejected() -> None:
    problem = auth_setting_problem("0.0.0.0:50052", "keys", None)

    assert problem is not None
    assert "api_keys_file is required" in problem


def test_public_address_with_auth_off_is_allowed() -> None:
    assert auth_setting_problem("0.0.0.0:50052", "off", None) is None


def test_loopback_without_keys_is_allowed() -> None:
    assert auth_setting_problem("127.0.0.1:0", "keys", None) is None


def test_auth_off_with_keys_file_is_rejected(keys_file: Path) -> None:
    add_key(keys_file, "acme", Role.TENANT)

    problem = auth_setting_problem("127.0.0.1:0", "off", keys_file)

    assert problem is not None
    assert "Remove one of them" in problem


def test_unknown_auth_mode_is_rejected() -> None:
    problem = auth_setting_problem("127.0.0.1:0", "maybe", None)

    assert problem is not None
    assert "auth must be one of" in problem


def _principal(role: Role, tenant: str = "acme") -> Principal:
    return Principal(key_id="k1", tenant=tenant, role=role)


def test_empty_tenant_takes_key_tenant() -> None:
    request = cache_pb2.LookupRequest(query="q")

    denial = tenant_at("scope", "tenant")(_principal(Role.TENANT), request)

    assert denial is None
    assert request.scope.tenant == "acme"


def test_other_tenant_is_denied_for_tenant_key() -> None:
    request = cache_pb2.LookupRequest(scope=cache_pb2.Scope(tenant="globex"))

    denial = tenant_at("scope", "tenant")(_principal(Role.TENANT), request)

    assert isinstance(denial, Denial)
    assert denial.authenticated
    assert "scope.tenant 'globex' differs from the tenant of the API key" in (
        denial.message
    )


@pytest.mark.parametrize("role", [Role.SERVICE, Role.ADMIN])
def test_service_and_admin_act_for_named_tenant(role: Role) -> None:
    request = cache_pb2.LookupRequest(scope=cache_pb2.Scope(tenant="globex"))

    denial = tenant_at("scope", "tenant")(_principal(role), request)

    assert denial is None
    assert request.scope.tenant == "globex"


def test_authenticate_names_missing_and_unknown_key(keys_file: Path) -> None:
    add_key(keys_file, "acme", Role.TENANT)
    store = KeyStore(keys_file)

    missing = authenticate(store, ())
    unknown = authenticate(store, (("authorization", "Bearer qg_wrong"),))

    assert isinstance(missing, Denial)
    assert not missing.authenticated
    assert "missing API key" in missing.message
    assert isinstance(unknown, Denial)
    assert "unknown or revoked" in unknown.message
    assert "qg_wrong" not in unknown.message


def test_key_command_prints_key_once_and_stores_digest(
    keys_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = keys_command.main(
        ["add", "--file", str(keys_file), "--tenant", "acme", "--role", "service"]
    )

    output = capsys.readouterr().out
    key = output.strip().splitlines()[-1]
    assert status == 0
    assert key.startswith("qg_")
    assert key not in keys_file.read_text()
    [principal] = list_keys(keys_file)
    assert principal.role is Role.SERVICE
    assert principal.tenant == "acme"


def test_key_command_lists_without_digests(
    keys_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, key_id = add_key(keys_file, "acme", Role.ADMIN)

    status = keys_command.main(["list", "--file", str(keys_file)])

    output = capsys.readouterr().out
    assert status == 0
    assert key_id in output
    assert "admin" in output
    assert hash_key(key) not in output


def test_key_command_rejects_bad_tenant(
    keys_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = keys_command.main(
        ["add", "--file", str(keys_file), "--tenant", "two words"]
    )

    assert status == 2
    assert "--tenant must contain only printable characters" in capsys.readouterr().err
    assert not keys_file.exists()


def test_rejection_log_throttles_repeats(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    log = RejectionLog(interval_s=3600.0)
    denial = Denial(authenticated=False, message="missing API key")

    for _ in range(5):
        log.record("/querygate.cache.v1.CacheService/Lookup", denial, None)

    lines = [
        record for record in caplog.records if record.getMessage() == "auth_rejected"
    ]
    assert len(lines) == 1
    assert lines[0].__dict__["code"] == "UNAUTHENTICATED"


def test_rejection_log_reports_suppressed_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    log = RejectionLog(interval_s=0.0)
    denial = Denial(authenticated=True, message="needs an admin API key")

    log.record("/querygate.router.v1.RouterService/ReloadClassifier", denial, "k1")
    log.record("/querygate.router.v1.RouterService/ReloadClassifier", denial, "k1")

    lines = [
        record for record in caplog.records if record.getMessage() == "auth_rejected"
    ]
    assert len(lines) == 2
    assert lines[1].__dict__["code"] == "PERMISSION_DENIED"
    assert lines[1].__dict__["key_id"] == "k1"
    assert lines[1].__dict__["suppressed_since_last"] == 0
