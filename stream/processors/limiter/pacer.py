"""The pacer: calls spaced evenly at a pace, on schedule even when timers fire late.

No catch-up bursts: a strict spacing limiter refuses a call that comes early, so a call
that waited (for a slot, or through a stall) does not entitle the next one to come sooner.
But asyncio's timers fire late as a rule (epoll waits in whole milliseconds, rounded up,
and the woken task runs an iteration later: 1.5-1.9 ms at an even 100/s), and scheduling
each call 1/pace after the previous grant slowed a 100/s pace to 86/s. So the pacer
learns the usual lateness (a moving average of the lateness of grants it held back, each
counted up to TIMER_LATENESS_MAX_S) and schedules the next call 1/pace after the later of
"this one was due" and "now less LATENESS_ALLOWANCE times the usual lateness".
"""

from __future__ import annotations

import math

__all__ = ["LATENESS_ALLOWANCE", "TIMER_LATENESS_GAIN", "TIMER_LATENESS_MAX_S", "Pacer"]

TIMER_LATENESS_MAX_S = 0.003
TIMER_LATENESS_GAIN = 0.1
LATENESS_ALLOWANCE = 2.0
# Floating-point slack when comparing a timer's instant with the schedule it computed.
_EPS = 1e-9


class Pacer:
    """The schedule of paced calls: no call before `next_send`."""

    def __init__(self) -> None:
        self.next_send = -math.inf
        self.bound_at = -math.inf  # the last time the pacer held back a call
        self._held_back = False  # it held back a call since the last paced grant
        self._lateness = 0.0  # the usual lateness of a grant it held back

    def holds(self, now: float) -> bool:
        """True if a call must wait for the schedule (noted: the pace is in use)."""
        if now < self.next_send - _EPS:
            self.bound_at = now
            self._held_back = True
            return True
        return False

    def grant(self, now: float, pace: float) -> None:
        """A call starts at `now` under `pace` (inf: unpaced): schedule the next one."""
        if not math.isfinite(pace):
            return
        if self._held_back:  # granted when a timer fired
            late = min(max(0.0, now - self.next_send), TIMER_LATENESS_MAX_S)
            self._lateness += TIMER_LATENESS_GAIN * (late - self._lateness)
            self._held_back = False
        due = max(self.next_send, now - LATENESS_ALLOWANCE * self._lateness)
        self.next_send = due + 1.0 / pace
