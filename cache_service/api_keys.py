"""API keys of both services: the keys file, key checks and the access rules.

The cache service and the router read the same keys file format, and the router
imports this module too, so both apply the same rules. Nothing here imports grpc.

A keys file is TOML with one table per key under ``[keys.KEY_ID]``, holding the
SHA-256 hex digest of the key, its tenant and its role. The key itself is never
stored: ``python -m cache_service.keys add`` prints it once.

SHA-256 without a salt or a slow hash is enough because every key is 32 random
bytes (256 bits), so guessing a key from its digest is infeasible. Slow password
hashes protect low-entropy secrets, and they would cost milliseconds per request.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import threading
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tomlkit

logger = logging.getLogger(__name__)

KEY_PREFIX = "qg_"
# Form of the keys that generate_key returns. Its 32 bytes in URL-safe base64
# without padding are 43 characters from A-Z, a-z, 0-9, "-" and "_".
KEY_PATTERN = re.compile(r"qg_[A-Za-z0-9_-]{43}")
KEY_ID_CHARS = 12
# gRPC metadata keys are lowercase; the value is "Bearer <key>".
AUTHORIZATION_METADATA_KEY = "authorization"
AUTH_MODES = ("keys", "off")


class Role(enum.StrEnum):
    """Permission level of a key.

    ``tenant`` acts for its own tenant only. ``service`` (the router calling the
    cache) acts for the tenant named in each request, because the router has
    already authenticated its caller. ``admin`` acts for any tenant and may call
    admin RPCs.
    """

    TENANT = "tenant"
    SERVICE = "service"
    ADMIN = "admin"


class KeyFileError(ValueError):
    """The keys file is missing, not valid TOML or has an invalid entry."""


@dataclass(frozen=True)
class Principal:
    """The caller that a valid key identifies. ``key_id`` is safe to log."""

    key_id: str
    tenant: str
    role: Role

    @property
    def acts_for_any_tenant(self) -> bool:
        """True for admin and service keys, which may name any tenant."""
        return self.role in (Role.ADMIN, Role.SERVICE)


@dataclass(frozen=True)
class _KeyRecord:
    principal: Principal
    digest: bytes


def hash_key(key: str) -> str:
    """Return the SHA-256 hex digest of ``key``, the form the keys file stores."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """Return a new key: the prefix ``qg_`` and 32 random bytes, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def is_well_formed_key(key: str) -> bool:
    """Return whether ``key`` has the form that ``generate_key`` produces."""
    return KEY_PATTERN.fullmatch(key) is not None


def key_id_of(digest_hex: str) -> str:
    """Return the id that names a key in the file and in logs: its digest's start."""
    return digest_hex[:KEY_ID_CHARS]


def bearer_key(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """Return the key of the ``authorization: Bearer <key>`` metadata, if any.

    A value without the ``Bearer`` scheme counts as no key.
    """
    for name, value in metadata:
        if name.lower() != AUTHORIZATION_METADATA_KEY or not isinstance(value, str):
            continue
        scheme, _, key = value.strip().partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            return key.strip()
    return None


class KeyStore:
    """Keys loaded from a keys file, reloaded when the file changes.

    ``authenticate`` hashes the presented key and compares the digest with every
    stored digest by ``hmac.compare_digest``, without stopping at a match, so the
    time taken does not reveal which entry matched. The cost grows with the number
    of keys: about 0.1 ms per check with 1,000 keys (docs/security.md).

    The file is checked for changes at most once per ``reload_interval_s``, so a
    revoked key stops working within that time without a restart. A file that
    becomes invalid is logged and the previous keys stay in force.
    """

    def __init__(self, path: Path, reload_interval_s: float = 2.0) -> None:
        self._path = path
        self._reload_interval_s = reload_interval_s
        self._lock = threading.Lock()
        self._records, self._stamp = _read_records(path)
        self._next_check = time.monotonic() + reload_interval_s

    @property
    def path(self) -> Path:
        """The keys file."""
        return self._path

    def __len__(self) -> int:
        return len(self._records)

    def authenticate(self, key: str) -> Principal | None:
        """Return the principal of ``key``, or None when no stored key matches."""
        self._reload_if_changed()
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found: Principal | None = None
        for record in self._records:
            if hmac.compare_digest(record.digest, digest):
                found = record.principal
        return found

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        with self._lock:
            if now < self._next_check:
                return
            self._next_check = now + self._reload_interval_s
            try:
                if _file_stamp(self._path) == self._stamp:
                    return
                self._records, self._stamp = _read_records(self._path)
            except (OSError, KeyFileError) as error:
                logger.error(
                    "api_keys_reload_failed",
                    extra={"path": str(self._path), "error": str(error)},
                )
                return
        logger.info(
            "api_keys_reloaded",
            extra={"path": str(self._path), "keys": len(self._records)},
        )


def _file_stamp(path: Path) -> tuple[int, int, int]:
    status = path.stat()
    return (status.st_mtime_ns, status.st_size, status.st_ino)


def _read_records(path: Path) -> tuple[tuple[_KeyRecord, ...], tuple[int, int, int]]:
    try:
        stamp = _file_stamp(path)
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise KeyFileError(
            f"keys file not found: {path}. Create it with "
            "`python -m cache_service.keys add --file PATH ...`."
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise KeyFileError(f"keys file {path} is not valid TOML: {error}") from None
    keys = document.get("keys", {})
    if not isinstance(keys, dict):
        raise KeyFileError(f"keys in {path} must be a table of [keys.KEY_ID] tables.")
    return tuple(
        _parse_record(path, key_id, table) for key_id, table in keys.items()
    ), stamp


def _parse_record(path: Path, key_id: str, table: object) -> _KeyRecord:
    where = f"keys.{key_id} in {path}"
    if not isinstance(table, dict):
        raise KeyFileError(f"{where} must be a table with sha256, tenant and role.")
    digest = table.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise KeyFileError(
            f"{where}: sha256 must be 64 hex digits; got {digest!r}. "
            "Recreate the key with `python -m cache_service.keys add`."
        )
    try:
        digest_bytes = bytes.fromhex(digest)
    except ValueError:
        raise KeyFileError(f"{where}: sha256 must be hex digits.") from None
    tenant = table.get("tenant")
    if not isinstance(tenant, str) or not tenant.strip():
        raise KeyFileError(f"{where}: tenant must be a non-empty string.")
    role = table.get("role")
    if role not in {item.value for item in Role}:
        raise KeyFileError(
            f"{where}: role must be one of {[item.value for item in Role]}; "
            f"got {role!r}."
        )
    principal = Principal(key_id=key_id, tenant=tenant, role=Role(role))
    return _KeyRecord(principal=principal, digest=digest_bytes)


def is_loopback_address(address: str) -> bool:
    """True when the HOST of ``HOST:PORT`` only accepts connections from this host."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_setting_problem(
    address: str, auth: str, keys_file: Path | None, *, field_prefix: str = ""
) -> str | None:
    """Return why the auth settings are invalid for ``address``, or None.

    Without a keys file a service may serve unauthenticated only on a loopback
    address, or anywhere when ``auth`` is explicitly "off".
    """
    if auth not in AUTH_MODES:
        return (
            f"{field_prefix}auth must be one of {list(AUTH_MODES)}; got {auth!r}. "
            "Use keys (the default) and set api_keys_file."
        )
    if auth == "off" and keys_file is not None:
        return (
            f"{field_prefix}auth is off but {field_prefix}api_keys_file is set to "
            f"{keys_file}. Remove one of them."
        )
    if auth == "keys" and keys_file is None and not is_loopback_address(address):
        return (
            f"{field_prefix}api_keys_file is required when the service listens on "
            f"the non-loopback address {address!r}; got none. Create a keys file "
            'with `python -m cache_service.keys add`, or set auth = "off" '
            "to serve without authentication on purpose."
        )
    if keys_file is not None:
        try:
            _read_records(keys_file)
        except KeyFileError as error:
            return f"{field_prefix}api_keys_file is invalid: {error}"
    return None


def tenant_problem(principal: Principal, requested: str, field: str) -> str | None:
    """Return why ``principal`` may not act for ``requested``, or None.

    An empty ``requested`` is allowed here, because the caller fills it with the
    key's tenant.
    """
    if not requested or requested == principal.tenant:
        return None
    if principal.acts_for_any_tenant:
        return None
    return (
        f"{field} {requested!r} differs from the tenant of the API key "
        f"(key id {principal.key_id}). Leave {field} empty to use the key's "
        "tenant, or use a key of that tenant."
    )


def admin_problem(principal: Principal, method: str) -> str | None:
    """Return why ``principal`` may not call the admin RPC ``method``, or None."""
    if principal.role is Role.ADMIN:
        return None
    return (
        f"{method} needs an admin API key; the key (id {principal.key_id}) has the "
        f"role {principal.role.value}. Call it with an admin key."
    )


MISSING_KEY_MESSAGE = (
    "missing API key: send the metadata 'authorization: Bearer <key>'. "
    "Ask the operator for a key."
)
UNKNOWN_KEY_MESSAGE = (
    "the API key in the authorization metadata is unknown or revoked. "
    "Check the key, or ask the operator for a new one."
)


def add_key(path: Path, tenant: str, role: Role, note: str = "") -> tuple[str, str]:
    """Create a key, append its digest to the keys file and return (key, key id).

    The file is created with mode 0600 when missing and replaced atomically.

    Raises:
        KeyFileError: the existing file is invalid.
    """
    document = (
        tomlkit.parse(path.read_text(encoding="utf-8"))
        if path.exists()
        else _new_keys_document()
    )
    if path.exists():
        _read_records(path)
    key = generate_key()
    digest = hash_key(key)
    entry = tomlkit.table()
    entry["sha256"] = digest
    entry["tenant"] = tenant
    entry["role"] = role.value
    entry["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if note:
        entry["note"] = note
    keys = document.setdefault("keys", tomlkit.table(is_super_table=True))
    keys[key_id_of(digest)] = entry
    _write_private(path, tomlkit.dumps(document))
    return key, key_id_of(digest)


def revoke_key(path: Path, key_id: str) -> bool:
    """Remove the key ``key_id`` from the keys file; return False when absent."""
    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    keys = document.get("keys", {})
    if key_id not in keys:
        return False
    del keys[key_id]
    _write_private(path, tomlkit.dumps(document))
    return True


def list_keys(path: Path) -> Sequence[Principal]:
    """Return the principals of every key in the file, without digests."""
    records, _ = _read_records(path)
    return [record.principal for record in records]


def _new_keys_document() -> tomlkit.TOMLDocument:
    document = tomlkit.document()
    document.add(tomlkit.comment("Querygate API keys: SHA-256 digests only."))
    document.add(tomlkit.comment("Manage with: python -m cache_service.keys --help"))
    return document


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    partial.replace(path)
