"""Pauses: no new call starts before a pause ends (a Retry-After, an outage's backoff, an
exhausted quota); calls in flight finish. Paused time is also what the rate estimator takes
out of its measurements, so the pauses keep their total and the length of the last one."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["Pauses"]


class Pauses:
    """When the current pause ends, and what pauses have cost so far."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.until = -math.inf  # the end of the current (or the last) pause
        self.total = 0.0  # seconds paused so far, overlaps counted once
        self.last = 0.0  # the length the last pause begun or extended added
        self.count = 0  # pauses begun (an extension of one running is not a new one)

    def hold(self, until: float) -> None:
        """Hold new calls back until `until` (a pause already running may be extended)."""
        now = self._clock()
        if until > max(now, self.until):
            if self.until <= now:
                self.count += 1
            self.total += until - max(now, self.until)
            self.last = until - max(now, self.until)
            self.until = until
