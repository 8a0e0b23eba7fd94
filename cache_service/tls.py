"""TLS credentials for gRPC servers and channels, read from PEM files.

Both services bind with ``server_credentials`` when a certificate is configured,
and the router dials the cache with ``channel_credentials``. Their settings check
the files' contents first with `cache_service.pem_files`, because gRPC reports a
PEM file it cannot load only as a failed bind or handshake.
"""

from __future__ import annotations

from pathlib import Path

import grpc


def server_credentials(
    cert_file: Path, key_file: Path, client_ca_file: Path | None = None
) -> grpc.ServerCredentials:
    """Return credentials that serve ``cert_file`` with its private key.

    With ``client_ca_file`` the server requires mutual TLS: the handshake fails
    for a client without a certificate signed by that CA.

    Raises:
        OSError: a file cannot be read.
    """
    client_ca = client_ca_file.read_bytes() if client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(key_file.read_bytes(), cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def channel_credentials(
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> grpc.ChannelCredentials:
    """Return credentials that trust ``ca_file`` and present a client certificate.

    Without ``ca_file`` the system's root certificates are trusted. The client
    certificate, needed for mutual TLS, is sent only when both ``cert_file`` and
    ``key_file`` are given.

    Raises:
        OSError: a file cannot be read.
    """
    return grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes() if ca_file is not None else None,
        private_key=key_file.read_bytes() if key_file and cert_file else None,
        certificate_chain=cert_file.read_bytes() if key_file and cert_file else None,
    )


def add_port(
    server: grpc.Server | grpc.aio.Server,
    address: str,
    cert_file: Path | None,
    key_file: Path | None,
    client_ca_file: Path | None,
) -> int:
    """Bind ``address`` with TLS when a certificate is given, else in plain text.

    Returns the bound port, or 0 when the address cannot be bound.
    """
    if cert_file is None or key_file is None:
        return server.add_insecure_port(address)
    credentials = server_credentials(cert_file, key_file, client_ca_file)
    return server.add_secure_port(address, credentials)
