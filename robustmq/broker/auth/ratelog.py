"""A logger wrapper that cannot flood the log: at most ``burst`` lines per ``interval``.

Denials (bad credentials, ACL, bans, limits) are caused by clients, so a hostile client
could otherwise write the log as fast as it can send packets. Lines over the budget are
counted, and the count is reported with the first line of the next interval.
"""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, burst: int = 20, interval: float = 10.0) -> None:
        self._logger = logger
        self._burst = burst
        self._interval = interval
        self._window_start = -interval
        self._lines = 0
        self.suppressed = 0  # lines dropped in the current interval

    def log(self, level: int, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._window_start >= self._interval:
            if self.suppressed:
                self._logger.log(
                    level, "%d similar lines suppressed in the last %g s", self.suppressed,
                    self._interval,
                )  # fmt: skip
            self._window_start, self._lines, self.suppressed = now, 0, 0
        if self._lines < self._burst:
            self._lines += 1
            self._logger.log(level, msg, *args)
        else:
            self.suppressed += 1

    def info(self, msg: str, *args: Any) -> None:
        self.log(logging.INFO, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, msg, *args)
