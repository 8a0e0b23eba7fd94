"""Entry point: ``python -m cache_service [--config FILE] [--port-file PATH]``.

``python -m cache_service snapshot|restore ...`` runs a backup command instead
(see ``cache_service.backup_cli``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from cache_service import backup_cli
from cache_service.backup_commands import commands_epilog
from cache_service.errors import SettingsError, StorageError
from cache_service.logging_setup import configure_logging
from cache_service.server import create_server
from cache_service.server_port import AddressInUseError
from cache_service.settings import ENV_PREFIX, CacheSettings, service_env_names
from cache_service.unknown_env import warn_unknown_variables

logger = logging.getLogger("cache_service")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cache_service",
        description="Semantic cache gRPC service. Settings come from "
        "QUERYGATE_CACHE_* environment\nvariables over the optional TOML file.",
        epilog=commands_epilog(backup_cli.HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="TOML file of cache settings")
    parser.add_argument(
        "--port-file",
        type=Path,
        help="file to write the bound port to, once the server is listening",
    )
    return parser.parse_args(argv)


def write_port_file(path: Path, port: int) -> None:
    """Write ``port`` atomically, so a launcher polling the file never reads half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(f"{port}\n", encoding="utf-8")
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in backup_cli.COMMANDS:
        return backup_cli.main(argv)
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        settings = CacheSettings.load(os.environ, args.config)
    except SettingsError as error:
        print(f"invalid cache settings: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    warn_unknown_variables(logger, os.environ, ENV_PREFIX, service_env_names())

    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())

    try:
        running = create_server(settings)
    except (AddressInUseError, StorageError) as error:
        logger.error("startup_failed", extra={"error": str(error)})
        return 1
    if args.port_file is not None:
        write_port_file(args.port_file, running.port)
    while not stop_requested.is_set():
        try:
            running.wait_until_serving(timeout_s=0.5)
            break
        except TimeoutError:
            continue
        except RuntimeError:
            # The loader already logged the cause with its traceback.
            running.stop(grace_s=0)
            return 1

    stop_requested.wait()
    logger.info("shutdown_requested")
    running.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
