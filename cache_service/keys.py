"""Manage API keys: ``python -m cache_service.keys add|revoke|list --file KEYS``.

``add`` prints the new key once and stores only its SHA-256 digest. The cache
service and the router read the same file format, so one command serves both
(``python -m router_service.keys`` runs this command too).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cache_service.api_keys import KeyFileError, Role, add_key, list_keys, revoke_key
from cache_service.entries import check_tenant_id
from cache_service.errors import InvalidRequestError


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description="Create, revoke and list Querygate API keys."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    add = commands.add_parser("add", help="create a key and print it once")
    add.add_argument("--file", type=Path, required=True, help="TOML keys file")
    add.add_argument("--tenant", required=True, help="tenant the key acts for")
    add.add_argument(
        "--role",
        choices=[role.value for role in Role],
        default=Role.TENANT.value,
        help="tenant: own tenant only; service: the router calling the cache; "
        "admin: any tenant and admin RPCs (default: tenant)",
    )
    add.add_argument("--note", default="", help="free text stored with the key")

    revoke = commands.add_parser("revoke", help="remove a key by its id")
    revoke.add_argument("--file", type=Path, required=True, help="TOML keys file")
    revoke.add_argument("--key-id", required=True, help="id printed by add or list")

    listing = commands.add_parser("list", help="print the id, tenant and role of keys")
    listing.add_argument("--file", type=Path, required=True, help="TOML keys file")
    return parser.parse_args(argv)


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m cache_service.keys"
) -> int:
    """Run one key command and return the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv, prog)
    try:
        if args.command == "add":
            check_tenant_id(args.tenant, "--tenant")
            key, key_id = add_key(args.file, args.tenant, Role(args.role), args.note)
            print(f"key id {key_id} ({args.role} of tenant {args.tenant})")
            print("The key is shown only now; store it in a secret manager:")
            print(key)
            return 0
        if args.command == "revoke":
            if revoke_key(args.file, args.key_id):
                print(f"revoked key {args.key_id}")
                return 0
            print(f"key id {args.key_id} not found in {args.file}", file=sys.stderr)
            return 1
        for principal in list_keys(args.file):
            print(f"{principal.key_id}  {principal.role.value:<8} {principal.tenant}")
        return 0
    except (KeyFileError, InvalidRequestError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
