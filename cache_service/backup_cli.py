"""The backup commands: ``python -m cache_service snapshot`` and ``... restore``.

Both read ``data_dir`` and ``backup_dir`` from the same settings as the service
(``--config FILE`` and ``QUERYGATE_CACHE_*`` variables). ``snapshot`` is safe
while the service runs. ``restore`` needs the service stopped; see
``cache_service.backup`` for the rule.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cache_service.backup import restore_snapshot, write_snapshot
from cache_service.backup_commands import COMMANDS as COMMANDS
from cache_service.backup_commands import (
    BackupHelp,
    parse_backup_args,
    print_backup_result,
)
from cache_service.errors import BackupError, SettingsError
from cache_service.settings import CacheSettings

HELP = BackupHelp(
    prog="python -m cache_service",
    description="Back up or restore the cache's entry store.",
    snapshot="copy the entry store into a new file, also while serving",
    output_dir="folder for the snapshot file (default: the backup_dir setting)",
    restore="make a snapshot the entry store; the service must be stopped",
    force="replace a store that contains entries; the old file is kept beside it",
    config="TOML file of cache settings",
)


def main(argv: list[str]) -> int:
    """Run one command and print its result as one JSON line.

    Returns 0 on success, 1 when the backup or restore failed and 2 when the
    settings are invalid; the reason goes to standard error.
    """
    args = parse_backup_args(argv, HELP)
    try:
        settings = CacheSettings.load(os.environ, args.config)
    except SettingsError as error:
        print(f"invalid cache settings: {error}", file=sys.stderr)
        return 2
    if settings.data_dir is None:
        print(
            "data_dir is empty, so there is no entry store to back up or restore",
            file=sys.stderr,
        )
        return 2
    data_dir = settings.data_dir

    def run() -> dict[str, object]:
        if args.command == "snapshot":
            return _snapshot(data_dir, args.output_dir or settings.backup_dir)
        return _restore(args.snapshot, data_dir, args.force)

    return print_backup_result(args.command, run, BackupError)


def _snapshot(data_dir: Path, backup_dir: Path | None) -> dict[str, object]:
    if backup_dir is None:
        raise BackupError("backup_dir is empty; set it or pass --output-dir")
    info = write_snapshot(data_dir, backup_dir)
    return {
        "snapshot": str(info.path),
        "entries": info.entries,
        "vectors": info.vectors,
        "size_bytes": info.size_bytes,
    }


def _restore(snapshot: Path, data_dir: Path, force: bool) -> dict[str, object]:
    outcome = restore_snapshot(snapshot, data_dir, force=force)
    return {
        "restored": str(snapshot),
        "data_dir": str(data_dir),
        "entries": outcome.entries,
        "vectors": outcome.vectors,
        "replaced": None if outcome.replaced is None else str(outcome.replaced),
    }
