"""Command line of the ``snapshot`` and ``restore`` commands, shared by both services.

The cache backs up its entry store and the router its cost ledger. Both take the
same commands and options, and both print one JSON line on success or the reason
on standard error with exit code 1. Each service supplies its own help texts and
the work itself. Only the standard library is imported here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

COMMANDS = ("snapshot", "restore")


@dataclass(frozen=True)
class BackupHelp:
    """Help texts of one service's backup commands, one per command and option."""

    prog: str
    description: str
    snapshot: str
    output_dir: str
    restore: str
    force: str
    config: str


def commands_epilog(texts: BackupHelp) -> str:
    """Return the lines that list the backup commands below a service's own help."""
    return (
        "commands:\n"
        f"  {texts.prog} snapshot [--output-dir DIR]\n"
        f"      {texts.snapshot}\n"
        f"  {texts.prog} restore SNAPSHOT [--force]\n"
        f"      {texts.restore}\n"
        f"Run '{texts.prog} snapshot --help' or '... restore --help' for the options."
    )


def parse_backup_args(argv: list[str], texts: BackupHelp) -> argparse.Namespace:
    """Parse ``snapshot [--output-dir DIR]`` or ``restore SNAPSHOT [--force]``.

    Both commands take ``--config FILE``. Exits with argparse's usage message on
    invalid arguments.
    """
    parser = argparse.ArgumentParser(prog=texts.prog, description=texts.description)
    commands = parser.add_subparsers(dest="command", required=True)
    snapshot = commands.add_parser("snapshot", help=texts.snapshot)
    snapshot.add_argument("--output-dir", type=Path, help=texts.output_dir)
    restore = commands.add_parser("restore", help=texts.restore)
    restore.add_argument("snapshot", type=Path, help="snapshot file to restore")
    restore.add_argument("--force", action="store_true", help=texts.force)
    for command in (snapshot, restore):
        command.add_argument("--config", type=Path, help=texts.config)
    return parser.parse_args(argv)


def print_backup_result(
    command: str,
    run: Callable[[], dict[str, object]],
    error_type: type[Exception],
) -> int:
    """Call ``run`` and print its result as one JSON line.

    Returns 0, or 1 after printing the reason to standard error when ``run``
    raises ``error_type``. Other exceptions propagate.
    """
    try:
        result = run()
    except error_type as error:
        print(f"{command} failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
