"""Adaptive concurrency limiter for calls to the upstream parse API.

Who calls it: the HTTP processor, once per API call::

    with await limiter.acquire() as permit:
        response = await client.post(...)
        if response.status_code == 429 or response.status_code >= 500:
            permit.dropped(retry_after_s)       # also: timeout, connection error
        elif response.is_success:
            permit.success(elapsed_s)
        else:
            permit.ignore()                     # a 4xx says nothing about capacity

Three outcomes, as in Netflix concurrency-limits: *success*, *dropped* (the upstream had no
capacity) and *ignore*. Exactly one report counts per permit; leaving the ``with`` block
without one reports ``ignore()``, so an exception or a cancellation never leaks a slot.

The algorithm is loss-driven AIMD. Only drops shrink the limit; latency never does, so an
upstream that is merely slow keeps its full concurrency.

1. **Slow start.** Until the first drop, every success that arrives while the limit is in
   use adds a slot: the limit doubles per round trip (4 -> 64 in four round trips).
2. **Multiplicative decrease, once per round trip.** A drop of a call started after the last
   decrease shrinks the limit to ``beta`` times the limit that call started under (not a
   limit slow start has doubled since); drops of calls started *before* the last decrease
   are counted but not acted on, so one burst of 429s is one signal.
   ``beta`` depends on how long the limit had been calm: 0.95 after a long calm stretch (the
   limit only just crossed a steady ceiling), down to 0.7 for a drop right after the
   previous one (the capacity fell).
3. **Growth only when in use, paced in time and in round trips** (after slow start). Below
   the level of the last drop the limit closes a share of the gap per second (concave, as
   TCP CUBIC); close to it, it creeps, since every probe beyond a rate limit costs a whole
   Retry-After pause; once there, its growth rate doubles every few seconds (convex), so a
   capacity that rose is found within about 20 s. One success never adds more than
   ``1/limit``: at most one slot per round trip.
4. **Outage.** Three drops in a row with no success between them set the limit to its floor
   and, without a Retry-After, pause new calls for an exponential backoff (0.5 s doubling to
   10 s, counted from the start of the failed probe), so an outage sees a probe now and
   then instead of traffic. The first probe that succeeds restarts at half the last good
   limit and slow-starts back to it.
5. **Pauses.** A Retry-After holds back *new* calls until it ends; calls in flight finish.
6. **Fractional limit.** The limit is a real number: the slots below it are always open and
   the last one for the fractional share of the time, so a limit of 5.6 really sends 5.6
   calls' worth of load (at small limits one slot is 10-20 % of the rate).
7. **Rate cap.** With ``rate_max > 0`` a token bucket also spaces calls to that rate.

The decisions are synchronous and read the injected clock (`try_acquire`, `next_attempt_at`,
the permit reports), so a simulator drives this very code in virtual time. `acquire` is a
thin asyncio wrapper: waiters park on futures, woken first come first served when a report
frees a slot, or by one timer when only time can unblock them (a pause ending, a rate-cap
token, the fractional slot). Nothing polls and nothing sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

__all__ = ["AdaptiveLimiter", "LimiterState", "Permit"]

# Multiplicative decrease: ``beta`` goes from BETA_MIN for a drop right after the previous
# decrease (or the end of the pause that followed it) to BETA_MAX after a long calm stretch,
# with this e-folding time. A drop after calm means the limit only just crossed a steady
# ceiling, so 5 % off is enough; drops in quick succession mean the capacity fell, so up to
# 30 % off converges in a few steps (R -> R/2 in about 10 s at a 50 ms round trip).
BETA_MAX = 0.95
BETA_MIN = 0.7
CALM_TAU_S = 2.0
# Slow start adds this many slots per success in use: one per success doubles per round trip.
SLOW_START_GAIN = 1.0
# Growth after slow start, relative per second. Below the level of the last drop the limit
# closes APPROACH_PER_S of the gap per second: back quickly to a level that was nearly good,
# yet slowly enough that a level inflated by a rate limiter's burst allowance is corrected
# by the next drop instead of being returned to at once.
APPROACH_PER_S = 0.1
# Within NEAR_MARGIN of that level (or above it) the limit creeps at PLATEAU_GROWTH_PER_S,
# and the creep doubles every PROBE_DOUBLING_S up to MAX_GROWTH_PER_S. The creep makes a
# steady ceiling cost about one drop per 10 s (each drop at a rate limit costs a Retry-After
# pause); the doubling finds a capacity that doubled within about 20 s; the cap bounds the
# overshoot when the new ceiling is hit.
NEAR_MARGIN = 0.03
PLATEAU_GROWTH_PER_S = 0.003
PROBE_DOUBLING_S = 3.5
MAX_GROWTH_PER_S = 0.05
# A success counts as "in use" when at least this share of the limit was in flight: an
# unused limit must not grow (light load says nothing about the ceiling).
IN_USE_RATIO = 0.8
# Drops in a row (calls started after the previous decrease, with no such call succeeding
# in between) that mean an outage rather than a ceiling. Two happen at a steady ceiling:
# right after a decrease the fractional slot may probe once more.
OUTAGE_STREAK = 3
# Outage backoff without a Retry-After: the first pause, doubling per further drop, up to
# the cap. The cap keeps an outage to one probe per 10 s, while recovery after it starts
# within one client timeout (10 s) of the upstream coming back.
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 10.0
# After an outage, the first successful probe restarts at this share of the last good
# limit (the upstream answers again but may still be fragile), then slow-starts back to it.
RESTART_FRACTION = 0.5
# The rate cap's bucket holds this many seconds of calls: strict enough that any second
# stays within 5 % of the cap, loose enough that a high cap needs no timer per call.
RATE_BURST_S = 0.05
# Time constant of the smoothed success rate exported as a gauge.
RATE_WINDOW_S = 5.0
# Floating-point slack when comparing credit and tokens at the instant a timer computed.
_EPS = 1e-9


@dataclass(frozen=True)
class LimiterState:
    """A snapshot of the limiter, for metrics and tests."""

    limit: float  # the concurrency limit (a real number, see "Fractional limit")
    in_flight: int  # permits not yet reported
    drops: int  # dropped() reports, all of them
    decreases: int  # drops that shrank the limit (at most one per round trip)
    pauses: int  # pauses begun: Retry-After or outage backoff
    paused_until: float | None  # clock time the current pause ends; None when not paused
    rate: float  # successes per second, smoothed over RATE_WINDOW_S


class Permit:
    """The right to make one call; report its outcome exactly once.

    Only the first of `success`, `dropped` and `ignore` counts, later calls are no-ops.
    As a context manager it reports `ignore()` on exit when nothing was reported (an
    exception or a cancellation), so the slot is always given back.
    """

    __slots__ = ("_epoch", "_level", "_limiter", "_reported", "started_at")

    def __init__(
        self, limiter: AdaptiveLimiter, started_at: float, epoch: int, level: float
    ) -> None:
        self._limiter = limiter
        self._epoch = epoch  # the limiter's decrease count when the call started
        self._level = level  # the limit the call started under
        self._reported = False
        self.started_at = started_at

    @property
    def reported(self) -> bool:
        """True once an outcome was reported."""
        return self._reported

    def success(self, latency_s: float) -> None:
        """The upstream answered with a success after `latency_s` seconds.

        The latency belongs to the three-outcome contract; this loss-driven limit does not
        act on it, because a merely slow upstream must keep its concurrency.
        """
        if not self._reported:
            self._reported = True
            self._limiter._on_success(self._epoch)

    def dropped(self, retry_after_s: float | None = None) -> None:
        """No capacity upstream: 429, 503, timeout or connection error.

        `retry_after_s` is the upstream's Retry-After: no new call starts before it ends.
        """
        if not self._reported:
            self._reported = True
            self._limiter._on_drop(self._epoch, self._level, self.started_at, retry_after_s)

    def ignore(self) -> None:
        """The outcome says nothing about capacity (e.g. a 400): just free the slot."""
        if not self._reported:
            self._reported = True
            self._limiter._on_ignore()

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.ignore()


class AdaptiveLimiter:
    """Loss-driven AIMD concurrency limit with Retry-After pauses and an optional rate cap.

    The algorithm is in the module docstring. Use one instance per upstream, from one event
    loop (or, in simulation, from one thread with a virtual `clock`); it is not thread-safe.
    Raises ValueError for bounds that do not satisfy 1 <= min <= initial <= max.
    """

    def __init__(
        self,
        *,
        min_limit: int = 1,
        max_limit: int = 256,
        initial_limit: int = 4,
        rate_max: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= min_limit <= initial_limit <= max_limit:
            raise ValueError(
                "need 1 <= min_limit <= initial_limit <= max_limit, got "
                f"{min_limit}, {initial_limit}, {max_limit}"
            )
        if rate_max < 0:
            raise ValueError(f"rate_max must be >= 0, got {rate_max}")
        self._clock = clock
        now = clock()
        self._min = float(min_limit)
        self._max = float(max_limit)
        self._limit = float(initial_limit)
        self._in_flight = 0
        # AIMD state.
        self._ssthresh = self._max  # slow start while the limit is below it
        self._epoch = 0  # bumped by every decrease; a permit remembers the epoch it began in
        self._w_max = 0.0  # the level at which the last acted-on drop happened
        self._near_since: float | None = None  # since when the limit is near or above _w_max
        self._calm_since = now  # the last decrease, or the end of the pause after it
        self._streak = 0  # acted-on drops since a call of the current epoch succeeded
        self._last_good = float(initial_limit)  # the level before the current streak began
        self._outage = False
        self._last_success_at = now
        self._paused_until = -math.inf
        # The fractional slot's credit in slot-seconds (<= 0), integrated up to _credit_at.
        self._credit = 0.0
        self._credit_at = now
        # The optional rate cap's token bucket.
        self._rate_max = rate_max
        self._bucket_size = max(1.0, rate_max * RATE_BURST_S)
        self._tokens = self._bucket_size
        self._tokens_at = now
        # Smoothed success rate: an exponentially decayed count of successes.
        self._rate_count = 0.0
        self._rate_at = now
        self._drops = 0
        self._decreases = 0
        self._pauses = 0
        # asyncio: parked waiters (FIFO), how many were woken but have not yet run, and the
        # single timer for wake-ups that only time can bring.
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._woken = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    @property
    def state(self) -> LimiterState:
        """A snapshot for metrics and tests."""
        now = self._clock()
        return LimiterState(
            limit=self._limit,
            in_flight=self._in_flight,
            drops=self._drops,
            decreases=self._decreases,
            pauses=self._pauses,
            paused_until=self._paused_until if self._paused_until > now else None,
            rate=self._rate_count
            * math.exp(-(now - self._rate_at) / RATE_WINDOW_S)
            / RATE_WINDOW_S,
        )

    # ------------------------------------------------------------------ synchronous core

    def try_acquire(self) -> Permit | None:
        """A permit if a call may start now, else None; never waits."""
        now = self._clock()
        if now < self._paused_until:
            return None
        self._integrate(now)
        if not self._slot_open():
            return None
        if self._rate_max > 0:
            self._refill(now)
            if self._tokens < 1.0 - _EPS:
                return None
            self._tokens -= 1.0
        self._in_flight += 1
        return Permit(self, now, self._epoch, self._limit)

    def next_attempt_at(self) -> float | None:
        """The earliest clock time at which `try_acquire` may succeed if no report arrives.

        None: only a report (a call finishing) can open a slot. A time <= now: try now.
        """
        now = self._clock()
        at = max(now, self._paused_until)
        self._integrate(now)
        base = math.floor(self._limit)
        if self._in_flight >= base:
            frac = self._limit - base
            if self._in_flight > base or frac <= 0:
                return None
            at = max(at, now - self._credit / frac)
        if self._rate_max > 0:
            self._refill(now)
            if self._tokens < 1.0:
                at = max(at, now + (1.0 - self._tokens) / self._rate_max)
        return at

    # ------------------------------------------------------------------ asyncio wrapper

    async def acquire(self) -> Permit:
        """Wait until a call may start and return its permit.

        Called by the HTTP processor before every API call. Waiters are served first come,
        first served; cancelling a waiting `acquire` is safe and passes its turn on.
        """
        if not self._waiters and not self._woken:
            permit = self.try_acquire()
            if permit is not None:
                return permit
        self._loop = asyncio.get_running_loop()
        at_head = False
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
        now = self._clock()
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
            self._timer = self._loop.call_later(max(0.0, at - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self._wake()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf

    def _grantable(self, now: float) -> int:
        """How many permits `try_acquire` would grant in a row right now."""
        if now < self._paused_until:
            return 0
        self._integrate(now)
        slots = math.floor(self._limit) - self._in_flight
        if slots <= 0:
            slots = 1 if self._slot_open() else 0
        if self._rate_max > 0:
            self._refill(now)
            slots = min(slots, int(self._tokens + _EPS))
        return slots

    # ------------------------------------------------------------------ reports

    def _on_success(self, epoch: int) -> None:
        now = self._clock()
        self._integrate(now)
        in_use = self._in_flight >= IN_USE_RATIO * self._limit
        self._in_flight -= 1
        decay = math.exp(-(now - self._rate_at) / RATE_WINDOW_S)
        self._rate_count = self._rate_count * decay + 1.0
        self._rate_at = now
        since_last = max(0.0, now - self._last_success_at)
        self._last_success_at = now
        if epoch == self._epoch:  # a call that met the current conditions succeeded
            self._streak = 0
            if self._outage:
                self._outage = False
                self._w_max = self._ssthresh = self._last_good
                self._set_limit(max(self._limit, self._last_good * RESTART_FRACTION))
        if in_use:
            self._grow(now, since_last)
        self._wake()

    def _on_drop(
        self, epoch: int, level: float, started_at: float, retry_after_s: float | None
    ) -> None:
        now = self._clock()
        self._integrate(now)
        self._in_flight -= 1
        self._drops += 1
        calm = max(0.0, now - self._calm_since)  # before this drop's own pause extends it
        if retry_after_s is not None and retry_after_s > 0:
            self._pause(now + retry_after_s)
        if epoch == self._epoch:  # news: the limit has not reacted to this round trip yet
            self._epoch += 1
            self._decreases += 1
            self._streak += 1
            if self._streak < OUTAGE_STREAK:
                # The level that failed is the limit the call started under, not one
                # that slow start may have doubled since.
                level = min(self._limit, level)
                if self._streak == 1:
                    self._last_good = level
                beta = BETA_MAX - (BETA_MAX - BETA_MIN) * math.exp(-calm / CALM_TAU_S)
                self._w_max = level
                self._near_since = None
                self._set_limit(level * beta)
                self._ssthresh = self._limit
            else:
                self._outage = True
                self._set_limit(self._min)
                self._ssthresh = self._min
                if retry_after_s is None:
                    # Space the *starts* of probes: one that took a whole client timeout
                    # to fail has waited already.
                    exponent = min(30, self._streak - OUTAGE_STREAK)
                    backoff = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0**exponent)
                    self._pause(started_at + backoff)
            self._calm_since = max(now, self._paused_until)
        self._wake()

    def _on_ignore(self) -> None:
        self._integrate(self._clock())
        self._in_flight -= 1
        self._wake()

    # ------------------------------------------------------------------ helpers

    def _grow(self, now: float, dt: float) -> None:
        """A success arrived while the limit was in use, `dt` after the previous success."""
        if self._limit < self._ssthresh:
            self._set_limit(min(self._limit + SLOW_START_GAIN, self._ssthresh))
            return
        gap = max(0.0, self._w_max / self._limit - 1.0)
        if self._limit < self._w_max * (1.0 - NEAR_MARGIN):
            self._near_since = None
            creep = PLATEAU_GROWTH_PER_S
        else:
            if self._near_since is None:
                self._near_since = now
            doublings = min(30.0, (now - self._near_since) / PROBE_DOUBLING_S)
            creep = min(MAX_GROWTH_PER_S, PLATEAU_GROWTH_PER_S * 2.0**doublings)
        rate = max(creep, APPROACH_PER_S * gap)
        self._set_limit(self._limit + min(1.0 / self._limit, rate * self._limit * dt))

    def _pause(self, until: float) -> None:
        now = self._clock()
        if until > max(now, self._paused_until):
            if self._paused_until <= now:
                self._pauses += 1
            self._paused_until = until
            self._calm_since = max(self._calm_since, until)

    def _set_limit(self, value: float) -> None:
        """Change the limit (after `_integrate`); a new fractional slot starts with no debt."""
        value = min(self._max, max(self._min, value))
        if math.floor(value) != math.floor(self._limit):
            self._credit = 0.0
        self._limit = value

    def _slot_open(self) -> bool:
        """A slot below the limit is free (the fractional one only while it has credit)."""
        base = math.floor(self._limit)
        if self._in_flight < base:
            return True
        return self._in_flight == base and self._limit > base and self._credit >= -_EPS

    def _integrate(self, now: float) -> None:
        """Advance the fractional slot's credit: +frac per second, -1 while it is in use."""
        dt = now - self._credit_at
        if dt <= 0:
            return
        base = math.floor(self._limit)
        used = min(1, max(0, self._in_flight - base))
        self._credit = min(0.0, self._credit + (self._limit - base - used) * dt)
        self._credit_at = now

    def _refill(self, now: float) -> None:
        dt = now - self._tokens_at
        if dt > 0:
            self._tokens = min(self._bucket_size, self._tokens + dt * self._rate_max)
            self._tokens_at = now
