"""The async waiting shell: `AdaptiveLimiter.acquire` parks callers until a call may start.

Waiters park on futures, woken first come first served when a report frees a slot, or by
one timer when only time can unblock them (a pause ending, a paced call's turn, the
fractional slot). Nothing polls and nothing sleeps a fixed time. The decisions stay in
`Admission`, on the injected clock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time

from stream.clock import Clock, SystemClock
from stream.processors.limiter.admission import Admission, Permit

__all__ = ["PRECISE_GAP_MIN_S", "TIMER_EARLY_S", "AdaptiveLimiter"]

# For paces of at most 1/PRECISE_GAP_MIN_S the timer is armed TIMER_EARLY_S early and the
# rest is slept (blocking the event loop for 0.55 ms on average, at most 11 % of its time
# at 200/s): grants land within ~0.1 ms of their time instead of 0-1 ms late, which a
# strict spacing limiter at 100/s (10 ms apart) tells apart.
TIMER_EARLY_S = 0.0011
PRECISE_GAP_MIN_S = 0.005
# Floating-point slack when comparing the armed timer's instant with a new one.
_EPS = 1e-9


class AdaptiveLimiter(Admission):
    """A paced rate and a loss-driven AIMD concurrency limit, with Retry-After pauses.

    Use one instance per upstream, from one event loop (or, in simulation, from one thread
    with a virtual `clock`, calling only the synchronous `Admission` methods); it is not
    thread-safe. Raises ValueError for bounds that do not satisfy
    1 <= min <= initial <= max.
    """

    def __init__(
        self,
        *,
        min_limit: int = 1,
        max_limit: int = 256,
        initial_limit: int = 4,
        rate_max: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            min_limit=min_limit,
            max_limit=max_limit,
            initial_limit=initial_limit,
            rate_max=rate_max,
            clock=clock or SystemClock(),
        )
        # Parked waiters (FIFO), how many were woken but have not yet run, and the single
        # timer for wake-ups that only time can bring.
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._woken = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    async def acquire(self, *, first: bool = False) -> Permit:
        """Wait until a call may start and return its permit.

        Called by the HTTP processor before every API call. Waiters are served first come,
        first served, except that `first` (a retry) goes to the head of the queue: its
        micro-batch is otherwise done and waits for it, so a retry queued behind the other
        batches' calls held its batch for as long as the queue was. Cancelling a waiting
        `acquire` is safe and passes its turn on.
        """
        if not self._waiters and not self._woken:
            permit = self.try_acquire()
            if permit is not None:
                return permit
        self._loop = asyncio.get_running_loop()
        at_head = first
        while True:
            waiter: asyncio.Future[None] = self._loop.create_future()
            if at_head:  # woken, then beaten to the slot: keep our turn
                self._waiters.appendleft(waiter)
            else:
                self._waiters.append(waiter)
            self._wake()
            try:
                await waiter
            except BaseException:
                if waiter.cancelled():  # still parked (or skipped by `_wake` since)
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                else:  # woken, then cancelled before running: pass the wake-up on
                    self._woken -= 1
                    self._wake()
                raise
            self._woken -= 1
            permit = self.try_acquire()
            if permit is not None:
                self._wake()
                return permit
            at_head = True

    def _wake(self) -> None:
        """Wake as many waiters as could start now; arm the timer if only time can help."""
        if not self._waiters:
            self._cancel_timer()
            return
        now = self._now()
        grantable = self._grantable(now)
        free = grantable - self._woken
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter leaves the queue on its own
                waiter.set_result(None)
                self._woken += 1
                free -= 1
        # With slots open, the woken waiters call `_wake` again once they have run.
        at = self.next_attempt_at() if self._waiters and grantable <= 0 else None
        if at is None or self._loop is None:
            self._cancel_timer()
        elif self._timer is None or abs(self._timer_at - at) > _EPS:
            self._cancel_timer()
            self._timer_at = at
            early = TIMER_EARLY_S if self._pace(now) * PRECISE_GAP_MIN_S <= 1.0 else 0.0
            self._timer = self._loop.call_later(max(0.0, at - now - early), self._on_timer)

    def _on_timer(self) -> None:
        wait = self._timer_at - self._now()
        if 0.0 < wait <= TIMER_EARLY_S:
            time.sleep(wait)  # the last stretch, finer than asyncio's millisecond timers
        self._timer = None
        self._timer_at = math.inf
        self._wake()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf
