"""Command-line client: send one query to the router and print the result.

    python -m router_service.client "What is the capital of France?" \
        [--target HOST:PORT] [--tenant T] [--tier simple|medium|complex] [--json]

When the router checks API keys, export the key as QUERYGATE_API_KEY; it is sent
as ``authorization: Bearer <key>`` metadata and never read from the command line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format
from querygate.router.v1 import router_pb2, router_pb2_grpc
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cache_service.pem_files import ca_file_problem
from cache_service.tls import channel_credentials

API_KEY_ENV = "QUERYGATE_API_KEY"
TIER_CHOICES = {
    "simple": router_pb2.TIER_SIMPLE,
    "medium": router_pb2.TIER_MEDIUM,
    "complex": router_pb2.TIER_COMPLEX,
}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m router_service.client",
        description="Send one query to the Querygate router.",
    )
    parser.add_argument("query", help="the question to answer")
    parser.add_argument(
        "--target",
        default=os.environ.get("QUERYGATE_ROUTER_ADDRESS", "127.0.0.1:50051"),
        help="router address HOST:PORT (default: %(default)s)",
    )
    parser.add_argument(
        "--tenant",
        default=None,
        help="tenant id (default: the API key's tenant, or cli without a key)",
    )
    parser.add_argument("--user", default="", help="user id within the tenant")
    parser.add_argument(
        "--tier", choices=sorted(TIER_CHOICES), help="pin a tier instead of classifying"
    )
    parser.add_argument("--skip-cache", action="store_true", help="bypass the cache")
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=60.0,
        help="deadline of the request in seconds, greater than 0 (default: 60)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the response as JSON"
    )
    parser.add_argument(
        "--tls-ca-file",
        type=Path,
        help="connect with TLS and trust this CA certificate (PEM)",
    )
    return parser.parse_args(argv)


def _positive_seconds(text: str) -> float:
    """Parse a deadline for argparse; reject what would fail every request."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds; got {text!r}. Example: --timeout 30"
        ) from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds greater than 0; got {text}. A deadline "
            "of 0 or less expires before the router can answer. Example: --timeout 30"
        )
    return seconds


def _table(response: router_pb2.RouteResponse) -> Table:
    """Lay out the response as a two-column table, with every value as plain text."""
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("answer", response.answer),
        ("tier", router_pb2.Tier.Name(response.tier).removeprefix("TIER_").lower()),
        ("model", response.model),
        (
            "cache",
            router_pb2.CacheStatus.Name(response.cache_status)
            .removeprefix("CACHE_STATUS_")
            .lower()
            + (" (degraded)" if response.degraded else ""),
        ),
        ("similarity", f"{response.similarity:.3f}"),
        (
            "tokens",
            f"{response.usage.input_tokens} in / {response.usage.output_tokens} out",
        ),
        ("cost", f"${response.cost_usd:.6f} (list price)"),
        ("cost without router", f"${response.baseline_cost_usd:.6f}"),
        ("latency", f"{response.latency_ms:.0f} ms"),
        ("request id", response.request_id),
    ]
    # Answers, model names and ids come from the server. Rich reads "[...]" in a
    # str as markup, so each value goes in as Text and prints as it is.
    for name, value in rows:
        table.add_row(name, Text(value))
    return table


def _input_problem(api_key: str, ca_file: Path | None) -> str | None:
    """Return a one-line message for an API key or CA file that cannot be used."""
    # Metadata values must be printable ASCII. grpcio 1.85.3 otherwise fails the
    # call on the client with INTERNAL "Invalid metadata", which names nothing.
    if not (api_key.isascii() and api_key.isprintable()):
        return (
            f"{API_KEY_ENV} must contain printable ASCII characters only. "
            "Copy the key again as python -m cache_service.keys add printed it."
        )
    if ca_file is None:
        return None
    if not ca_file.is_file():
        return f"--tls-ca-file must be an existing PEM file; got {ca_file}."
    problem = ca_file_problem(ca_file)
    if problem is not None:
        return f"--tls-ca-file {problem.rule}; got {ca_file}. {problem.fix}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Send the query and print the response; return the exit status."""
    args = _parse_args(argv)
    api_key = os.environ.get(API_KEY_ENV, "").strip()
    problem = _input_problem(api_key, args.tls_ca_file)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    tenant = args.tenant
    if tenant is None:
        # With a key, an empty tenant lets the router take the key's tenant.
        tenant = "" if api_key else "cli"
    request = router_pb2.RouteRequest(
        query=args.query,
        tenant=tenant,
        user=args.user,
        tier=TIER_CHOICES.get(args.tier, router_pb2.TIER_UNSPECIFIED),
        skip_cache=args.skip_cache,
    )
    channel = (
        grpc.secure_channel(args.target, channel_credentials(args.tls_ca_file))
        if args.tls_ca_file is not None
        else grpc.insecure_channel(args.target)
    )
    with channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        try:
            response = stub.Route(request, timeout=args.timeout, metadata=metadata)
        except grpc.RpcError as error:
            print(
                f"request failed: {error.code().name}: {error.details()}",
                file=sys.stderr,
            )
            return 1
    if args.json:
        print(json.dumps(json_format.MessageToDict(response), indent=2))
    else:
        Console().print(_table(response))
    return 0


if __name__ == "__main__":
    sys.exit(main())
