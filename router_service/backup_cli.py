"""The ledger backup commands: ``python -m router_service snapshot|restore``.

Both read ``[ledger] path`` and ``[ledger] backup_dir`` from the same
configuration as the router (``--config FILE`` and ``QUERYGATE_ROUTER_*``
variables). ``snapshot`` is safe while routers run. ``restore`` needs every
router that uses the ledger stopped; see ``router_service.ledger_backup``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cache_service.backup_commands import COMMANDS as COMMANDS
from cache_service.backup_commands import (
    BackupHelp,
    parse_backup_args,
    print_backup_result,
)
from router_service.config import load_settings
from router_service.errors import BackupError, ConfigError
from router_service.ledger_backup import restore_ledger, write_ledger_snapshot

HELP = BackupHelp(
    prog="python -m router_service",
    description="Back up or restore the router's cost ledger.",
    snapshot="copy the ledger into a new file, also while routers run",
    output_dir="folder for the snapshot file (default: [ledger] backup_dir)",
    restore="make a snapshot the ledger; every router must be stopped",
    force="replace a ledger that contains rows; the old file is kept beside it",
    config="TOML configuration file (default: the packaged default_config.toml)",
)


def main(argv: list[str]) -> int:
    """Run one command and print its result as one JSON line.

    Returns 0 on success, 1 when the backup or restore failed, and 2 when the
    configuration is invalid or names no ledger file. The reason goes to
    standard error.
    """
    args = parse_backup_args(argv, HELP)
    try:
        settings = load_settings(args.config, os.environ)
    except ConfigError as error:
        print(f"invalid router configuration: {error}", file=sys.stderr)
        return 2
    if settings.ledger_path is None:
        print(
            "[ledger] path is empty, so the ledger is in memory and there is no "
            "file to back up or restore; set it or QUERYGATE_ROUTER_LEDGER_PATH",
            file=sys.stderr,
        )
        return 2
    ledger_path = settings.ledger_path
    return print_backup_result(
        args.command,
        lambda: _run(args, ledger_path, settings.ledger_backup_dir),
        BackupError,
    )


def _run(
    args: argparse.Namespace, ledger_path: Path, backup_dir: Path | None
) -> dict[str, object]:
    if args.command == "snapshot":
        backup_dir = args.output_dir or backup_dir
        if backup_dir is None:
            raise BackupError(
                "[ledger] backup_dir is empty; set it or pass --output-dir"
            )
        info = write_ledger_snapshot(ledger_path, backup_dir)
        return {
            "snapshot": str(info.path),
            "requests": info.requests,
            "size_bytes": info.size_bytes,
        }
    outcome = restore_ledger(args.snapshot, ledger_path, force=args.force)
    return {
        "restored": str(args.snapshot),
        "ledger": str(ledger_path),
        "requests": outcome.requests,
        "replaced": None if outcome.replaced is None else str(outcome.replaced),
    }
