"""Admission: whether a call may start now, the permit it gets, and its three outcomes.

Three outcomes, as in Netflix concurrency-limits: *success*, *dropped* (the upstream had no
capacity) and *ignore*. Exactly one report counts per permit; leaving the ``with`` block
without one reports ``ignore()``, so an exception or a cancellation never leaks a slot.

A call starts when no pause holds calls back, a slot is open under the concurrency limit
and the pacer's schedule allows it. The pace is the lowest of the configured cap
(``rate_max``), the quota headers' pace while they last, and the estimator's. Reports go
to the parts: a refusal (429, or a 503 that concurrency does not explain) to the rate
estimator, a capacity drop to the concurrency limit, a Retry-After to the pauses.

Everything here is synchronous and reads the injected clock, so a simulator drives this
very code in virtual time; the async waiting is a shell around it (`waiting`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from stream.clock import Clock
from stream.processors.limiter.concurrency import BACKOFF_BASE_S, ConcurrencyLimit
from stream.processors.limiter.estimator import RateEstimator
from stream.processors.limiter.pacer import Pacer
from stream.processors.limiter.pause import Pauses
from stream.processors.limiter.quota import Quota, QuotaPace

__all__ = ["RATE_SOURCES", "RATE_WINDOW_S", "Admission", "LimiterState", "Permit", "Source"]

# Time constant of the smoothed success rate exported as a gauge.
RATE_WINDOW_S = 5.0

Source = Literal["none", "measured", "headers", "configured"]
"""Where the paced rate comes from: nothing yet (unpaced), refusals measured, the upstream's
quota headers, or the configured STREAM_RATE_MAX."""
RATE_SOURCES: tuple[Source, ...] = ("none", "measured", "headers", "configured")


@dataclass(frozen=True)
class LimiterState:
    """A snapshot of the limiter, for metrics and tests."""

    limit: float  # the concurrency limit (a real number, see "Fractional limit")
    in_flight: int  # permits not yet reported
    drops: int  # dropped() reports, all of them
    decreases: int  # drops that shrank the concurrency limit (at most one per round trip)
    pauses: int  # pauses begun: Retry-After, outage backoff or an exhausted quota
    paused_until: float | None  # clock time the current pause ends; None when not paused
    rate: float  # successes per second, smoothed over RATE_WINDOW_S
    estimated_rate: float | None = None  # the allowed rate as estimated; None: unknown
    paced_rate: float | None = None  # calls per second the pacer allows now; None: unpaced
    source: Source = "none"
    refusals: int = 0  # rate refusals (429, or a 503 that concurrency does not explain)


class Permit:
    """The right to make one call; report its outcome exactly once.

    Only the first of `success`, `dropped` and `ignore` counts, later calls are no-ops.
    As a context manager it reports `ignore()` on exit when nothing was reported (an
    exception or a cancellation), so the slot is always given back.
    """

    __slots__ = (
        "_admission",
        "_depth",
        "_epoch",
        "_level",
        "_pace",
        "_reported",
        "_seq",
        "started_at",
    )

    def __init__(
        self,
        admission: Admission,
        started_at: float,
        epoch: int,
        level: float,
        seq: int,
        depth: int,
        pace: float,
    ) -> None:
        self._admission = admission
        self._epoch = epoch  # the concurrency limit's drop epoch when the call started
        self._level = level  # the concurrency limit the call started under
        self._seq = seq  # the call's rank among all calls granted
        self._depth = depth  # calls in flight when it started, itself included
        self._pace = pace  # the pace it was granted under (inf: unpaced)
        self._reported = False
        self.started_at = started_at

    @property
    def reported(self) -> bool:
        """True once an outcome was reported."""
        return self._reported

    def success(self, latency_s: float, quota: Quota | None = None) -> None:
        """The upstream answered with a success after `latency_s` seconds.

        The latency belongs to the three-outcome contract; the loss-driven limit does not
        act on it, because a merely slow upstream must keep its concurrency. `quota` is
        what the response's rate-limit headers said, if it had any.
        """
        if not self._reported:
            self._reported = True
            self._admission._on_success(self, latency_s, quota)

    def dropped(
        self,
        retry_after_s: float | None = None,
        *,
        status: int | None = None,
        quota: Quota | None = None,
    ) -> None:
        """No capacity upstream: 429, 503, timeout or connection error.

        `retry_after_s` is the upstream's Retry-After: no new call starts before it ends.
        `status` is the HTTP status when there was one: 429 (and a 503 that concurrency does
        not explain) is a rate refusal and feeds the rate estimate; anything else is a
        capacity drop for the concurrency limit.
        """
        if not self._reported:
            self._reported = True
            self._admission._on_drop(self, retry_after_s, status, quota)

    def ignore(self) -> None:
        """The outcome says nothing about capacity (e.g. a 400): just free the slot."""
        if not self._reported:
            self._reported = True
            self._admission._on_ignore(self)

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.ignore()


class Admission:
    """The synchronous limiter: grants permits and takes their reports, on `clock`'s
    monotonic seconds.

    Raises ValueError for bounds that do not satisfy 1 <= min <= initial <= max.
    """

    def __init__(
        self,
        *,
        min_limit: int,
        max_limit: int,
        initial_limit: int,
        rate_max: float,
        clock: Clock,
    ) -> None:
        if not 1 <= min_limit <= initial_limit <= max_limit:
            raise ValueError(
                "need 1 <= min_limit <= initial_limit <= max_limit, got "
                f"{min_limit}, {initial_limit}, {max_limit}"
            )
        if rate_max < 0:
            raise ValueError(f"rate_max must be >= 0, got {rate_max}")
        self._now = clock.monotonic  # every decision reads the clock's monotonic seconds
        now = self._now()
        self._pauses = Pauses(self._now)
        self._concurrency = ConcurrencyLimit(min_limit, max_limit, initial_limit, self._pauses, now)
        self._estimator = RateEstimator(self._pauses, now)
        self._pacer = Pacer()
        self._quota = QuotaPace()
        self._rate_max = rate_max
        self._granted = 0  # calls granted so far; permits are numbered from 1
        # Smoothed success rate: an exponentially decayed count of successes.
        self._rate_count = 0.0
        self._rate_at = now
        self._drops = 0
        self._refusals = 0

    @property
    def state(self) -> LimiterState:
        """A snapshot for metrics and tests."""
        now = self._now()
        pace = self._pace(now)
        concurrency = self._concurrency
        return LimiterState(
            limit=concurrency.limit,
            in_flight=concurrency.in_flight,
            drops=self._drops,
            decreases=concurrency.decreases,
            pauses=self._pauses.count,
            paused_until=self._pauses.until if self._pauses.until > now else None,
            rate=self._rate_count
            * math.exp(-(now - self._rate_at) / RATE_WINDOW_S)
            / RATE_WINDOW_S,
            estimated_rate=self._estimator.estimate,
            paced_rate=pace if math.isfinite(pace) else None,
            source=self._source(now),
            refusals=self._refusals,
        )

    def try_acquire(self) -> Permit | None:
        """A permit if a call may start now, else None; never waits."""
        now = self._now()
        if now < self._pauses.until:
            return None
        concurrency = self._concurrency
        concurrency.integrate(now)
        if not concurrency.slot_open():
            return None
        pace = self._pace(now)
        if self._pacer.holds(now):
            return None
        self._pacer.grant(now, pace)
        self._granted += 1
        concurrency.take(self._granted)
        self._estimator.on_grant(now)
        return Permit(
            self,
            now,
            concurrency.epoch,
            concurrency.limit,
            self._granted,
            concurrency.in_flight,
            pace,
        )

    def next_attempt_at(self) -> float | None:
        """The earliest clock time at which `try_acquire` may succeed if no report arrives.

        None: only a report (a call finishing) can open a slot. A time <= now: try now.
        """
        now = self._now()
        at = max(now, self._pauses.until, self._pacer.next_send)
        self._concurrency.integrate(now)
        opens = self._concurrency.open_at(now)
        return None if opens is None else max(at, opens)

    def _grantable(self, now: float) -> int:
        """How many permits `try_acquire` would grant in a row right now."""
        if now < self._pauses.until:
            return 0
        self._concurrency.integrate(now)
        slots = self._concurrency.grantable()
        if math.isfinite(self._pace(now)) and slots > 0:
            return 0 if self._pacer.holds(now) else 1
        return slots

    def _wake(self) -> None:
        """Called after every report: the waiting shell wakes its waiters."""

    # ------------------------------------------------------------------ reports

    def _on_success(self, permit: Permit, latency_s: float, quota: Quota | None) -> None:
        now = self._now()
        in_use, since_last, recovered = self._concurrency.on_success(
            now, permit._seq, permit._epoch, permit._depth
        )
        decay = math.exp(-(now - self._rate_at) / RATE_WINDOW_S)
        self._rate_count = self._rate_count * decay + 1.0
        self._rate_at = now
        if recovered:  # measure the rate afresh, and cruise before probing again
            self._estimator.restart_cruise(now, self._granted, now, self._pauses.total)
        if quota is not None:
            self._on_quota(now, quota, permit)
        self._estimator.on_success(self._concurrency.limit, latency_s)
        if in_use:
            self._concurrency.grow(now, since_last)
        self._wake()

    def _on_drop(
        self,
        permit: Permit,
        retry_after_s: float | None,
        status: int | None,
        quota: Quota | None,
    ) -> None:
        now = self._now()
        concurrency = self._concurrency
        concurrency.integrate(now)
        concurrency.release(permit._seq)
        self._drops += 1
        calm = concurrency.calm(now)  # before this drop's own pause extends it
        paused = self._pauses.total  # before this drop's own pause adds to it
        if retry_after_s is not None and retry_after_s > 0:
            self._pauses.hold(now + retry_after_s)
        if quota is not None:
            self._on_quota(now, quota, permit)
        refusal = status == 429 or (
            status == 503 and not concurrency.explains(now, permit._depth, permit._level)
        )
        if refusal:
            self._refusals += 1
        # News: no drop has been reacted to since this call was sent.
        if permit._epoch == concurrency.epoch:
            if concurrency.on_news(now, permit._seq):
                backoff = concurrency.enter_outage()
                if retry_after_s is None:
                    # Space the *starts* of probes: one that took a whole client timeout
                    # to fail has waited already.
                    self._pauses.hold(permit.started_at + backoff)
            elif refusal:
                if not concurrency.outage:
                    self._on_refusal(now, permit, paused)
            else:
                concurrency.decrease(permit._level, calm)
        elif refusal and not concurrency.outage:
            self._estimator.on_stale_refusal()
        self._wake()

    def _on_refusal(self, now: float, permit: Permit, paused: float) -> None:
        measured = self._estimator.on_refusal(
            now, permit._seq, permit.started_at, permit._pace, paused
        )
        if not measured and self._pauses.until <= now:
            # No Retry-After and nothing accepted since the last refusal: hold back as an
            # outage would.
            self._pauses.hold(permit.started_at + BACKOFF_BASE_S)

    def _on_ignore(self, permit: Permit) -> None:
        self._concurrency.integrate(self._now())
        self._concurrency.release(permit._seq)
        self._wake()

    def _on_quota(self, now: float, quota: Quota, permit: Permit) -> None:
        until = self._quota.on_answer(
            now, quota, self._granted - permit._seq, self._concurrency.in_flight
        )
        if until is not None:
            self._pauses.hold(until)

    # ------------------------------------------------------------------ the pace

    def _pace(self, now: float) -> float:
        """Calls per second the pacer allows at `now` (inf: unpaced)."""
        cap = self._rate_max if self._rate_max > 0 else math.inf
        quota = self._quota.current(now)
        if quota is not None:
            return min(cap, quota)
        estimate = self._estimator.pace(now, self._pacer.bound_at)
        return cap if estimate is None else min(cap, estimate)

    def _source(self, now: float) -> Source:
        if self._quota.current(now) is not None:
            return "headers"
        if self._estimator.estimate is not None:
            return "measured"
        return "configured" if self._rate_max > 0 else "none"
