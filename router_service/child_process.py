"""Child processes for the local stack: one process group each, stopped as a group.

On Linux each child sets PR_SET_PDEATHSIG, so the kernel sends it SIGTERM when its
parent dies and a launcher killed with SIGKILL leaves no orphans. On other systems
`stop_all` still stops the children, but they survive a launcher that is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_LOG_TAIL_LINES = 40


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return libc.prctl  # type: ignore[no-any-return]


# Loaded once in the parent: the code that runs between fork and exec must not load
# libraries or allocate much.
_PRCTL = _load_prctl()


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def set_parent_death_signal() -> None:
        if _PRCTL is None:
            return
        if _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # If the parent died between fork and prctl, no signal will come, so exit now.
        if os.getppid() != parent_pid:
            os._exit(1)

    return set_parent_death_signal


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
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env),
            process_group=0,
            preexec_fn=_die_with_parent(os.getpid()),
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
