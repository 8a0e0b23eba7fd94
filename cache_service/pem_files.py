"""Checks that TLS certificate, key and CA files load, run when settings are built.

gRPC reports a PEM file that it cannot load only as "Failed to bind to address"
or as a failed handshake, so both services' settings load the files with the
standard ``ssl`` module first and name the bad file. This module does not import
grpc, so settings stay light.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PemProblem:
    """Reason a PEM file cannot be used, for a settings error message.

    ``role`` is the file that breaks the rule: "cert" or "key" of a certificate
    pair, or "ca" for a CA file.
    """

    role: str
    rule: str
    fix: str


class _EncryptedKeyError(Exception):
    pass


def _reject_password() -> bytes:
    # OpenSSL calls this only for an encrypted key. Raising stops it from asking
    # for a passphrase on the terminal.
    raise _EncryptedKeyError


def _unreadable(role: str, error: OSError) -> PemProblem:
    return PemProblem(
        role,
        "must be readable by the service",
        f"Reading it failed: {error.strerror}. Check the file's permissions.",
    )


def certificate_pair_problem(cert_file: Path, key_file: Path) -> PemProblem | None:
    """Load a certificate chain and its private key as a TLS server or client would.

    Returns None when both load and the key matches the certificate, else the
    first problem found.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=cert_file)
    except OSError as error:
        if not isinstance(error, ssl.SSLError):
            return _unreadable("cert", error)
        return PemProblem(
            "cert",
            "must contain a PEM certificate (-----BEGIN CERTIFICATE-----)",
            "Point it at the certificate chain, not at the key or another file.",
        )
    try:
        context.load_cert_chain(cert_file, key_file, password=_reject_password)
    except _EncryptedKeyError:
        return PemProblem(
            "key",
            "must be an unencrypted PEM private key",
            "gRPC cannot read an encrypted key. Decrypt it, for example with "
            "openssl pkey -in KEY -out PLAIN_KEY, and keep it readable only by "
            "the service.",
        )
    except OSError as error:
        if not isinstance(error, ssl.SSLError):
            return _unreadable("key", error)
        if error.reason == "KEY_VALUES_MISMATCH":
            return PemProblem(
                "key",
                "must be the private key that matches tls_cert_file",
                "Use the key that the certificate was issued for.",
            )
        return PemProblem(
            "key",
            "must contain a PEM private key (-----BEGIN ... PRIVATE KEY-----)",
            "Point it at the private key of tls_cert_file.",
        )
    return None


def ca_file_problem(ca_file: Path) -> PemProblem | None:
    """Load ``ca_file`` as trusted CA certificates.

    Returns None when it contains at least one PEM certificate, else the problem.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=ca_file)
    except OSError as error:
        if not isinstance(error, ssl.SSLError):
            return _unreadable("ca", error)
        return PemProblem(
            "ca",
            "must contain at least one PEM CA certificate",
            "Point it at the certificate of the CA that signed the peer's certificate.",
        )
    return None


def tls_files_problem(
    cert_file: Path | None, key_file: Path | None, ca_file: Path | None
) -> tuple[Path, PemProblem] | None:
    """Check the certificate pair when both files are set, then the CA file.

    Returns the first file that cannot be loaded with its problem, or None.
    """
    if cert_file is not None and key_file is not None:
        problem = certificate_pair_problem(cert_file, key_file)
        if problem is not None:
            return (cert_file if problem.role == "cert" else key_file), problem
    if ca_file is not None:
        problem = ca_file_problem(ca_file)
        if problem is not None:
            return ca_file, problem
    return None
