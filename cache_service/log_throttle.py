"""One log line per interval for errors that can arrive in floods.

A client with a wrong key or certificate retries, and an unreachable Redis or cache
fails every request. So both services log such errors through a ``LogThrottle``.
The first error of an interval is logged and the rest are counted. The count goes
out with the next logged line. The router imports this module too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class LogThrottle:
    """Admits one log line per ``interval_s`` and counts the lines held back.

    Thread-safe. The clock is ``time.monotonic`` unless a test passes its own.
    """

    def __init__(
        self, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._held_back = 0

    def admit(self) -> int | None:
        """Return None to hold a line back, or the count held back before this one."""
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self._interval_s:
                self._held_back += 1
                return None
            self._last = now
            held_back, self._held_back = self._held_back, 0
            return held_back
