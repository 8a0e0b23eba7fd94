"""Run the router: `python -m router_service [--config FILE] [--port-file PATH]`.

Serves until SIGTERM or SIGINT, then stops gracefully. Exit status 2 means the
configuration is invalid; 1 means the classifier failed to load.
``python -m router_service snapshot|restore ...`` runs a ledger backup command
instead (see ``router_service.backup_cli``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from cache_service.backup_commands import commands_epilog
from cache_service.server_port import AddressInUseError
from cache_service.unknown_env import warn_unknown_variables
from router_service import backup_cli
from router_service.config import ENV_PREFIX, known_env_variables, load_settings
from router_service.errors import ConfigError
from router_service.logging_setup import configure_logging
from router_service.server import create_server
from router_service.settings import RouterSettings

logger = logging.getLogger("router_service")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m router_service",
        description="Run the Querygate router.",
        epilog=commands_epilog(backup_cli.HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML configuration file (default: the packaged default_config.toml)",
    )
    parser.add_argument(
        "--port-file",
        type=Path,
        help="write the bound port to this file once the server listens",
    )
    return parser.parse_args(argv)


def _write_port_file(path: Path, port: int) -> None:
    # Write then rename, so a launcher polling the file never reads half a number.
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(f"{port}\n", encoding="utf-8")
    temporary.replace(path)


def _classifier_artifact_problem(directory: Path | None) -> str | None:
    """Return why the configured classifier artifact cannot load, or None.

    Reads only the manifest and checks that the model file exists, so it is
    fast. The server still loads and verifies the model file itself.
    """
    from router_service.classifier import (
        MODEL_FILE,
        RETRAIN_HINT,
        ClassifierArtifactError,
        default_artifact_dir,
        read_manifest,
    )

    folder = directory or default_artifact_dir()
    try:
        read_manifest(folder)
        if not (folder / MODEL_FILE).is_file():
            raise ClassifierArtifactError(
                f"classifier model file {folder / MODEL_FILE} is missing. "
                f"{RETRAIN_HINT}"
            )
    except ClassifierArtifactError as error:
        if directory is None:
            return f"the committed classifier artifact cannot load: {error}"
        return (
            f"classifier.artifact_dir {directory} has no usable artifact: {error} "
            "Or leave [classifier] artifact_dir (and QUERYGATE_ROUTER_CLASSIFIER_DIR) "
            "empty to use the committed artifact."
        )
    return None


async def _serve(settings: RouterSettings, port_file: Path | None) -> int:
    running = await create_server(settings)
    if port_file is not None:
        _write_port_file(port_file, running.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    ready = asyncio.ensure_future(running.wait_until_serving())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if ready.done() and ready.exception() is not None:
        exit_code = 1
    else:
        await stopped
    ready.cancel()
    await running.stop()
    return exit_code


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, configure logging and serve; return the exit status."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments and arguments[0] in backup_cli.COMMANDS:
        return backup_cli.main(arguments)
    args = _parse_args(arguments)
    try:
        settings = load_settings(args.config, os.environ)
    except ConfigError as error:
        print(f"invalid router configuration: {error}", file=sys.stderr)
        return 2
    configure_logging(
        settings.log_format, os.environ.get("QUERYGATE_LOG_LEVEL", "INFO")
    )
    warn_unknown_variables(
        logger, os.environ, ENV_PREFIX, known_env_variables(settings)
    )
    logger.info(
        "settings_loaded",
        extra={
            "address": settings.address,
            "cache_target": settings.cache.target,
            "tiers": {tier: list(models) for tier, models in settings.tiers.items()},
            "backends": {n: m.backend for n, m in settings.models.items()},
        },
    )
    # Checked before binding, so a wrong folder fails before server_started.
    problem = _classifier_artifact_problem(settings.classifier_artifact_dir)
    if problem is not None:
        logger.error("startup_failed", extra={"error": problem})
        return 1
    try:
        return asyncio.run(_serve(settings, args.port_file))
    except ConfigError as error:
        logger.error("startup_failed", extra={"error": str(error)})
        return 2
    except AddressInUseError as error:
        logger.error("startup_failed", extra={"error": str(error)})
        return 1


if __name__ == "__main__":
    sys.exit(main())
