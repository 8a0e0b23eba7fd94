"""Warn about environment variables with a service's prefix that set nothing.

Both services use this at startup. A misspelled variable such as
``QUERYGATE_CACHE_MAX_ENTRY`` would otherwise be ignored without a trace. The
services warn rather than stop, because launchers often share one environment
among several versions of a service, and a variable that a newer version reads
must not keep an older one from starting.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class UnknownVariable:
    """A variable that no setting reads, and the known name closest to it."""

    name: str
    # Empty when no known name is similar enough (difflib ratio below 0.6).
    closest: str


def find_unknown_variables(
    environ: Mapping[str, str], prefix: str, known: Iterable[str]
) -> list[UnknownVariable]:
    """Return each variable that starts with ``prefix`` and is not in ``known``."""
    known_names = sorted(set(known))
    unknown = []
    for name in sorted(environ):
        if not name.startswith(prefix) or name in known_names:
            continue
        matches = difflib.get_close_matches(name, known_names, n=1)
        unknown.append(UnknownVariable(name, matches[0] if matches else ""))
    return unknown


def warn_unknown_variables(
    logger: logging.Logger,
    environ: Mapping[str, str],
    prefix: str,
    known: Iterable[str],
) -> list[UnknownVariable]:
    """Log one ``unknown_setting_variable`` WARNING per unknown variable.

    Only the names are logged, never the values, which may be secrets.
    """
    unknown = find_unknown_variables(environ, prefix, known)
    for variable in unknown:
        remedy = (
            f"rename it to {variable.closest}, or remove it"
            if variable.closest
            else "remove it, or check the settings table for the right name"
        )
        logger.warning(
            "unknown_setting_variable",
            extra={
                "variable": variable.name,
                "closest_setting": variable.closest,
                "remedy": remedy,
            },
        )
    return unknown
