"""Binding the listening ports of a service, shared by the cache and the router.

gRPC Python (1.85) sets SO_REUSEPORT on listening sockets by default. Then a
second server binds a port that a running server already uses, and the kernel
splits new connections between the two. Both services turn the option off, so
the second bind fails, and report that failure with the address. The Prometheus
endpoint's bind failure is reported the same way.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client

from cache_service.tls import add_port

# Server option that makes a bind fail while another socket listens on the port.
EXCLUSIVE_PORT_OPTIONS = [("grpc.so_reuseport", 0)]


class AddressInUseError(RuntimeError):
    """Another socket already listens on the address that a server should bind."""


def bind_port(
    server: grpc.Server | grpc.aio.Server,
    address: str,
    cert_file: Path | None,
    key_file: Path | None,
    client_ca_file: Path | None,
) -> int:
    """Bind ``address`` (with TLS when a certificate is given) and return the port.

    The server must be created with ``EXCLUSIVE_PORT_OPTIONS``, or a port in use
    binds anyway.

    Raises:
        AddressInUseError: another socket listens on ``address``.
        RuntimeError: the address cannot be bound for another reason.
    """
    try:
        port = add_port(server, address, cert_file, key_file, client_ca_file)
    except RuntimeError as error:
        # gRPC logs the reason only on stderr, so check the usual one here.
        if is_address_in_use(address):
            raise AddressInUseError(_in_use_message(address)) from error
        raise
    if port == 0:
        if is_address_in_use(address):
            raise AddressInUseError(_in_use_message(address))
        raise RuntimeError(f"failed to bind {address}; check the address setting")
    return port


def start_metrics_http(
    address: str, registry: prometheus_client.CollectorRegistry
) -> WSGIServer:
    """Serve ``registry`` on ``http://address/metrics`` from a daemon thread.

    ``address`` is the ``metrics_address`` setting, ``host:port``. Returns the
    HTTP server, whose ``shutdown()`` stops it.

    Raises:
        AddressInUseError: another socket listens on ``address``.
        OSError: the address cannot be bound for another reason.
    """
    host, _, port_text = address.rpartition(":")
    try:
        http_server, _ = prometheus_client.start_http_server(
            int(port_text), addr=host, registry=registry
        )
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise AddressInUseError(
            f"metrics_address {address} is already in use; stop the other process "
            "or set metrics_address to a free port"
        ) from error
    return http_server


def is_address_in_use(address: str) -> bool:
    """Return True when a test socket cannot bind ``address`` because it is in use.

    ``address`` is ``host:port`` as gRPC takes it, with IPv6 hosts in brackets.
    Port 0 and addresses that do not resolve are never in use.
    """
    host, _, port_text = address.rpartition(":")
    if not port_text.isdigit() or int(port_text) == 0:
        return False
    try:
        candidates = socket.getaddrinfo(
            host.strip("[]") or None,
            int(port_text),
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
    except socket.gaierror:
        return False
    for family, kind, protocol, _, socket_address in candidates:
        with socket.socket(family, kind, protocol) as probe:
            # gRPC sets SO_REUSEADDR too, so a port in TIME_WAIT counts as free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(socket_address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return True
    return False


def _in_use_message(address: str) -> str:
    return (
        f"address {address} is already in use; stop the other process or choose "
        "another port"
    )
