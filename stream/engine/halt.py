"""Systemic faults: when to stop taking work instead of dead-lettering the backlog.

Four triggers, one response (the loop's `_enter_halt`):
- a processor returns a `SystemicError` (wrong token, wrong URL, TLS, DNS);
- the sink says MongoDB has refused every write for longer than its bound
  (`mongo_refused`);
- the publisher meets a retry or DLQ topic that is missing and cannot be created
  (`topic_missing`);
- the dead-letter breaker: more than `ratio` of the records settled in a sliding window
  would be dead-lettered (and at least `min_count` of them): a bad deploy or a producer
  gone wrong. Halted until restart: no probe can tell that a parser was fixed.
The first three are halted until the probe (topics, then the processor, then MongoDB)
says the fault is gone.
"""

from __future__ import annotations

from collections import deque

__all__ = ["DLQ_BREAKER_REASON", "DeadLetterBreaker", "Halted"]

DLQ_BREAKER_REASON = "dlq_rate"


class Halted(Exception):
    """Raised by a batch that must not settle: the loop halts consumption.

    `reason` is a bounded label (`http_401`, `dns`, `dlq_rate`); `setting` the setting an
    operator should check; `probe` whether the processor's probe may end the halt.
    """

    def __init__(self, reason: str, message: str, setting: str, *, probe: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.setting = setting
        self.probe = probe


class DeadLetterBreaker:
    """Counts settled and dead-lettered records over the last `window_s` seconds."""

    def __init__(self, *, window_s: float, ratio: float, min_count: int) -> None:
        self._window_s = window_s
        self._ratio = ratio
        self._min_count = min_count
        self._events: deque[tuple[float, int, int]] = deque()
        self._total = 0
        self._dead = 0

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self._window_s:
            _, total, dead = self._events.popleft()
            self._total -= total
            self._dead -= dead

    def would_trip(self, now: float, total: int, dead: int) -> bool:
        """Would settling `total` records, `dead` of them dead-lettered, cross the limit?"""
        self._expire(now)
        dead_after = self._dead + dead
        total_after = self._total + total
        return (
            dead > 0
            and dead_after >= self._min_count
            and dead_after > self._ratio * total_after
        )

    def record(self, now: float, total: int, dead: int) -> None:
        self._expire(now)
        self._events.append((now, total, dead))
        self._total += total
        self._dead += dead
