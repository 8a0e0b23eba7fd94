"""Client certificate allow-list: names read from the auth context, and settings.

The real TLS handshakes, against both services, are in
tests/e2e/test_client_names_e2e.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tls_certs import make_pki

from cache_service.client_names import (
    REJECTED_MESSAGE,
    ClientNameCheck,
    client_name_check,
    presented_names,
)
from cache_service.errors import SettingsError
from cache_service.settings import CacheSettings
from router_service.config import settings_from_document
from router_service.errors import ConfigError
from router_service.settings import SecuritySettings

# The properties that gRPC Python 1.85 filled for a certificate with a DNS, a URI,
# an IP and an e-mail SAN (checked with a real handshake).
AUTH_CONTEXT = {
    "transport_security_type": [b"ssl"],
    "x509_common_name": [b"client-cn"],
    "x509_subject_alternative_name": [
        b"router.internal",
        b"spiffe://qg/router",
        b"10.1.2.3",
        b"ops@example.com",
    ],
    "peer_dns": [b"router.internal"],
    "peer_uri": [b"spiffe://qg/router"],
    "peer_ip": [b"10.1.2.3"],
    "peer_email": [b"ops@example.com"],
}


def test_presented_names_are_dns_uri_and_common_name() -> None:
    names = presented_names(AUTH_CONTEXT)

    assert names == ("router.internal", "spiffe://qg/router", "client-cn")


def test_presented_names_empty_without_certificate() -> None:
    assert presented_names({"transport_security_type": [b"ssl"]}) == ()


@pytest.mark.parametrize(
    "allowed", ["router.internal", "spiffe://qg/router", "client-cn"]
)
def test_check_accepts_each_kind_of_name(allowed: str) -> None:
    check = ClientNameCheck([allowed])

    assert check.rejection("/m", AUTH_CONTEXT) is None


@pytest.mark.parametrize(
    "allowed",
    ["10.1.2.3", "ops@example.com", "Router.Internal", "*.internal", "router"],
)
def test_check_rejects_other_names(allowed: str) -> None:
    check = ClientNameCheck([allowed])

    assert check.rejection("/m", AUTH_CONTEXT) == REJECTED_MESSAGE


def test_rejection_message_hides_allowed_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    check = ClientNameCheck(["secret-router-name"])

    with caplog.at_level(logging.WARNING, logger="cache_service.client_names"):
        message = check.rejection("/svc/Lookup", AUTH_CONTEXT)

    assert message is not None
    assert "secret-router-name" not in message
    [record] = caplog.records
    assert record.getMessage() == "client_certificate_rejected"
    assert record.presented_names == [  # type: ignore[attr-defined]
        "router.internal",
        "spiffe://qg/router",
        "client-cn",
    ]
    assert record.method == "/svc/Lookup"  # type: ignore[attr-defined]
    assert "secret-router-name" not in str(record.__dict__)


def test_rejection_log_counts_repeats(caplog: pytest.LogCaptureFixture) -> None:
    check = ClientNameCheck(["other"], log_interval_s=3600.0)

    with caplog.at_level(logging.WARNING, logger="cache_service.client_names"):
        for _ in range(5):
            check.rejection("/m", AUTH_CONTEXT)

    assert len(caplog.records) == 1


def test_empty_list_turns_check_off() -> None:
    assert client_name_check(()) is None
    assert client_name_check(("a",)) is not None


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    return pki.server_cert, pki.server_key, pki.ca_cert


def _mtls_settings(files: tuple[Path, Path, Path], **values: object) -> CacheSettings:
    cert, key, ca = files
    return CacheSettings(
        data_dir=None,
        tls_cert_file=cert,
        tls_key_file=key,
        tls_client_ca_file=ca,
        **values,  # type: ignore[arg-type]
    )


def test_cache_settings_read_names_from_environment(
    ca_file: tuple[Path, Path, Path],
) -> None:
    cert, key, ca = ca_file
    env = {
        "QUERYGATE_CACHE_DATA_DIR": "",
        "QUERYGATE_CACHE_TLS_CERT_FILE": str(cert),
        "QUERYGATE_CACHE_TLS_KEY_FILE": str(key),
        "QUERYGATE_CACHE_TLS_CLIENT_CA_FILE": str(ca),
        "QUERYGATE_CACHE_TLS_CLIENT_ALLOWED_NAMES": "router.internal, spiffe://qg/x",
    }

    settings = CacheSettings.load(env)

    assert settings.tls_client_allowed_names == ("router.internal", "spiffe://qg/x")


def test_cache_settings_read_names_from_toml(
    ca_file: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    cert, key, ca = ca_file
    config = tmp_path / "cache.toml"
    config.write_text(
        f'data_dir = ""\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'
        f'tls_client_ca_file = "{ca}"\n'
        'tls_client_allowed_names = ["router.internal"]\n'
    )

    settings = CacheSettings.load({}, config)

    assert settings.tls_client_allowed_names == ("router.internal",)


def test_cache_names_need_client_ca() -> None:
    with pytest.raises(
        SettingsError, match=r"tls_client_allowed_names needs tls_client_ca_file"
    ):
        CacheSettings(data_dir=None, tls_client_allowed_names=("router",))


@pytest.mark.parametrize(
    ("names", "rule"),
    [
        (("",), "no empty names"),
        ((" router",), "without leading or trailing whitespace"),
        (("a,b",), "without commas"),
        (("a\nb",), "control characters"),
        (("x" * 1025,), "at most 1024 characters"),
    ],
    ids=["empty", "blank", "comma", "newline", "too-long"],
)
def test_cache_rejects_bad_names(
    ca_file: tuple[Path, Path, Path], names: tuple[str, ...], rule: str
) -> None:
    with pytest.raises(SettingsError, match=rf"tls_client_allowed_names .*{rule}"):
        _mtls_settings(ca_file, tls_client_allowed_names=names)


def test_cache_environment_trailing_comma_rejected(
    ca_file: tuple[Path, Path, Path],
) -> None:
    cert, key, ca = ca_file
    env = {
        "QUERYGATE_CACHE_DATA_DIR": "",
        "QUERYGATE_CACHE_TLS_CERT_FILE": str(cert),
        "QUERYGATE_CACHE_TLS_KEY_FILE": str(key),
        "QUERYGATE_CACHE_TLS_CLIENT_CA_FILE": str(ca),
        "QUERYGATE_CACHE_TLS_CLIENT_ALLOWED_NAMES": "router,",
    }

    with pytest.raises(SettingsError, match=r"no empty names.*separated by commas"):
        CacheSettings.load(env)


def test_cache_toml_names_must_be_strings(
    ca_file: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    config = tmp_path / "cache.toml"
    config.write_text("tls_client_allowed_names = [1, 2]\n")

    with pytest.raises(
        SettingsError, match="tls_client_allowed_names must be a list of strings"
    ):
        CacheSettings.load({"QUERYGATE_CACHE_DATA_DIR": ""}, config)


def _router_document(security: dict[str, object]) -> dict[str, object]:
    return {
        "security": security,
        "tiers": {
            tier: {"models": ["sim"]} for tier in ("simple", "medium", "complex")
        },
        "models": {
            "sim": {
                "backend": "simulator",
                "model": "sim",
                "input_price_per_1k": 0.0,
                "output_price_per_1k": 0.0,
                "context_window": 4096,
                "timeout_s": 5.0,
            }
        },
    }


def test_router_settings_read_names_from_toml(
    ca_file: tuple[Path, Path, Path],
) -> None:
    cert, key, ca = ca_file
    document = _router_document(
        {
            "tls_cert_file": str(cert),
            "tls_key_file": str(key),
            "tls_client_ca_file": str(ca),
            "tls_client_allowed_names": ["querygate-client"],
        }
    )

    settings = settings_from_document(document, {})

    assert settings.security.tls_client_allowed_names == ("querygate-client",)


def test_router_names_need_client_ca() -> None:
    with pytest.raises(
        ConfigError,
        match=r"security\.tls_client_allowed_names needs security\.tls_client_ca",
    ):
        SecuritySettings(tls_client_allowed_names=("router",))


def test_router_rejects_non_string_name(ca_file: tuple[Path, Path, Path]) -> None:
    cert, key, ca = ca_file
    document = _router_document(
        {
            "tls_cert_file": str(cert),
            "tls_key_file": str(key),
            "tls_client_ca_file": str(ca),
            "tls_client_allowed_names": ["ok", 7],
        }
    )

    with pytest.raises(
        ConfigError,
        match=r"security\.tls_client_allowed_names must contain strings only; got 7",
    ):
        settings_from_document(document, {})


def test_router_rejects_name_string_for_list() -> None:
    document = _router_document({"tls_client_allowed_names": "router"})

    with pytest.raises(
        ConfigError, match=r"security\.tls_client_allowed_names must be of type list"
    ):
        settings_from_document(document, {})
