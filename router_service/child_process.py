"""Child processes for the local stack: one process group each, stopped as a group.

On Linux each child runs under util-linux's `setpriv --pdeathsig SIGTERM`, so the
kernel sends it SIGTERM when its parent dies and a launcher killed with SIGKILL
leaves no orphans. Where `setpriv` is missing, `stop_all` still stops the children,
but they survive a launcher that is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_LOG_TAIL_LINES = 40


def _parent_death_prefix() -> list[str]:
    # setpriv sets PR_SET_PDEATHSIG and then execs the command. A preexec_fn doing
    # the same ran Python between fork and exec, which is unsafe in a parent with
    # running threads: a child forked from a process using gRPC sometimes aborted
    # with "epoll_wait error: Bad file descriptor" before it could exec.
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        return []
    return [setpriv, "--pdeathsig", "SIGTERM", "--"]


@dataclass
class ChildProcess:
    """One started child: its name in messages, the process and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def exit_code(self) -> int | None:
        """Exit code once the process has ended, else None."""
        return self.process.poll()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last lines of the child's log, or a note when there is none."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])

    def signal_group(self, signum: int) -> None:
        """Send a signal to the child's process group, ignoring a group already gone."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


def spawn(
    name: str,
    command: Sequence[str],
    log_path: Path,
    env: Mapping[str, str],
) -> ChildProcess:
    """Start a command in its own process group with output appended to log_path.

    NOTE: PR_SET_PDEATHSIG fires when the thread that started the child exits, not
    only the process, so start stacks from a thread that lives as long as they do.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [*_parent_death_prefix(), *command],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env),
            process_group=0,
        )
    logger.info("child_started child=%s pid=%d log=%s", name, process.pid, log_path)
    return ChildProcess(name=name, process=process, log_path=log_path)


def stop_all(children: Sequence[ChildProcess], grace_s: float) -> None:
    """Send SIGTERM to every child's group, then SIGKILL to those alive after grace_s.

    Waits for (and so reaps) every child before returning.
    """
    for child in children:
        if child.exit_code is None:
            child.signal_group(signal.SIGTERM)

    deadline = time.monotonic() + grace_s
    for child in children:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            child.process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            logger.warning(
                "child_killed child=%s pid=%d reason=still running %.1f s after "
                "SIGTERM",
                child.name,
                child.pid,
                grace_s,
            )
            child.signal_group(signal.SIGKILL)
            child.process.wait()
        # Anything the child started in its group goes too, even after a clean exit.
        child.signal_group(signal.SIGKILL)
        logger.info(
            "child_stopped child=%s pid=%d exit_code=%s",
            child.name,
            child.pid,
            child.exit_code,
        )
