"""Tests of the TLS file checks that both services run when settings are built."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from tls_certs import PkiFiles, make_pki

from cache_service.pem_files import (
    ca_file_problem,
    certificate_pair_problem,
    tls_files_problem,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_pki(tmp_path_factory.mktemp("other_pki"), ca_name="other CA")


@pytest.fixture
def garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.pem"
    path.write_text("this is not a PEM file\n")
    return path


def write_encrypted_key(pki: PkiFiles, path: Path) -> Path:
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return path


def test_matching_pairs_pass(pki: PkiFiles) -> None:
    assert certificate_pair_problem(pki.server_cert, pki.server_key) is None
    assert certificate_pair_problem(pki.client_cert, pki.client_key) is None


def test_garbage_certificate_is_named(pki: PkiFiles, garbage: Path) -> None:
    problem = certificate_pair_problem(garbage, pki.server_key)

    assert problem is not None
    assert problem.role == "cert"
    assert "PEM certificate" in problem.rule


def test_key_given_as_certificate_is_named(pki: PkiFiles) -> None:
    problem = certificate_pair_problem(pki.server_key, pki.server_key)

    assert problem is not None
    assert problem.role == "cert"


def test_garbage_key_is_named(pki: PkiFiles, garbage: Path) -> None:
    problem = certificate_pair_problem(pki.server_cert, garbage)

    assert problem is not None
    assert problem.role == "key"
    assert "PEM private key" in problem.rule


def test_key_of_other_certificate_is_mismatch(
    pki: PkiFiles, other_pki: PkiFiles
) -> None:
    problem = certificate_pair_problem(pki.server_cert, other_pki.server_key)

    assert problem is not None
    assert problem.role == "key"
    assert problem.rule == "must be the private key that matches tls_cert_file"


def test_encrypted_key_is_rejected_without_prompt(
    pki: PkiFiles, tmp_path: Path
) -> None:
    encrypted = write_encrypted_key(pki, tmp_path / "encrypted.key")

    problem = certificate_pair_problem(pki.server_cert, encrypted)

    assert problem is not None
    assert problem.role == "key"
    assert "unencrypted" in problem.rule


def test_unreadable_key_is_named(pki: PkiFiles, tmp_path: Path) -> None:
    # Opening a folder fails with an OSError, like a file without read permission.
    problem = certificate_pair_problem(pki.server_cert, tmp_path)

    assert problem is not None
    assert problem.role == "key"
    assert problem.rule == "must be readable by the service"


def test_ca_file_checks(pki: PkiFiles, garbage: Path) -> None:
    problem = ca_file_problem(garbage)

    assert ca_file_problem(pki.ca_cert) is None
    assert problem is not None
    assert problem.role == "ca"
    assert ca_file_problem(pki.server_key) is not None


def test_tls_files_problem_returns_bad_path(
    pki: PkiFiles, other_pki: PkiFiles, garbage: Path
) -> None:
    mismatch = tls_files_problem(pki.server_cert, other_pki.server_key, None)
    bad_ca = tls_files_problem(pki.server_cert, pki.server_key, garbage)

    assert tls_files_problem(pki.server_cert, pki.server_key, pki.ca_cert) is None
    assert tls_files_problem(None, None, None) is None
    assert mismatch is not None
    assert mismatch[0] == other_pki.server_key
    assert bad_ca is not None
    assert bad_ca[0] == garbage
    assert bad_ca[1].role == "ca"
