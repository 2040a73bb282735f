"""Adaptive limiter for calls to the upstream parse API: a paced rate and a concurrency limit.

Who calls it: the HTTP processor, once per API call::

    with await limiter.acquire() as permit:
        response = await client.post(...)
        if response.status_code in (429, 503):
            permit.dropped(retry_after_s, status=status, quota=quota)   # a refusal
        elif response.status_code >= 500:
            permit.dropped(retry_after_s)       # also: timeout, connection error
        elif response.is_success:
            permit.success(elapsed_s, quota)
        else:
            permit.ignore()                     # a 4xx says nothing about capacity

Three outcomes, as in Netflix concurrency-limits: *success*, *dropped* (the upstream had no
capacity) and *ignore*. Exactly one report counts per permit; leaving the ``with`` block
without one reports ``ignore()``, so an exception or a cancellation never leaks a slot.

Two controls, because upstreams limit two things. A rate limiter (token bucket, fixed
window, strict spacing) counts requests per unit of time: what matters is the send rate and
its spacing, so calls are *paced* at an estimated allowed rate. A capacity cap counts
requests in progress: the concurrency limit (loss-driven AIMD) handles it, and timeouts.

**The paced rate.** A refusal (429, or a 503 that concurrency does not explain: the call
started with no more calls in flight than accepted calls had recently) marks a moment at
which the upstream's bucket was empty. Between two such moments the calls it accepted,
divided by the time between them, is its refill rate whatever the burst size, as long as
the bucket did not overflow in between (TCP BBR's policer detection, ``lt_bw`` in Linux's
``tcp_bbr.c``, measures the same way). A fixed window shows itself the same way: one
refusal per window, each window's quota accepted between them.

1. The first refusal sets the estimate to the calls accepted per second since the start,
   or over its last half second if more (slow start's ramp makes the average low).
2. Calls are paced evenly at the estimate less CRUISE_MARGIN (no catch-up bursts: a strict
   spacing limiter refuses a call that comes early). The timers' usual lateness, learnt
   as it happens, is made up, so late timers do not slow the pace; a longer stall is not.
3. After a cruise of `probe wait` the pace probes upward, exponentially from +2 % up to
   PROBE_MAX times the estimate; held there for PROBE_HOLD_S without a refusal, that rate
   becomes the estimate. A refusal during a probe moves the estimate up to the geometric
   mean of the estimate and the pace that was refused, and triples the probe wait (up to
   PROBE_WAIT_MAX_S, and at most PROBE_COST_RATIO times the pause the refusal cost: a
   Retry-After makes every failed probe expensive, a bare 503 costs one call); only a rise
   of a change's worth (1 / CHANGE_RATIO) restarts the wait short: a smaller one is
   mostly a bucket absorbing the probe, and restarting on it cost a Retry-After per probe.
   Two probes in a row refused at the same pace (within SAME_PACE), ramping from different
   estimates, mean a bucket too small to absorb anything: that pace is the rate.
4. A refusal while cruising means the estimate is too high: when enough calls were accepted
   since the previous refusal, the measured rate replaces it if clearly lower even with
   nothing refilled during the pause (the allowed rate fell; the probe wait restarts
   short), else it is trimmed by CRUISE_MARGIN, or to that rate if lower; a
   refusal soon after the previous one cuts it by QUICK_CUT, or, after a few such, to the
   rate that fits them: each began and ended with the bucket empty, so its accepted calls
   are the pause's refill (up to the bucket's size, or a window's quota) plus the rate
   times the sending time (`_fit_refill`). But while refusals cost at most JITTER_COST of
   the time, a cruise refusal is timing jitter (calls reach the upstream milliseconds off
   their spacing) and the estimate holds.
5. **Quota headers** (`Quota`: X-RateLimit-*, RateLimit-*, RateLimit/RateLimit-Policy) take
   over while they last: the pace spends the remaining quota (less the calls in flight)
   evenly until the window resets; an exhausted quota pauses new calls until the reset.

**The concurrency limit** (loss-driven AIMD; latency never shrinks it, so an upstream that
is merely slow keeps its full concurrency):

1. **Slow start.** Until the first capacity drop, every success that arrives while the
   limit is in use adds a slot: the limit doubles per round trip (4 -> 64 in four).
2. **Multiplicative decrease, once per round trip.** A capacity drop of a call started
   after the last decrease shrinks the limit to ``beta`` times the limit that call started
   under; ``beta`` is 0.95 after a long calm stretch, down to 0.7 right after the previous
   decrease (the capacity fell).
3. **Growth only when in use, paced in time and in round trips**: concave below the level
   of the last drop (as TCP CUBIC), a creep close to it, convex above it.
4. **Outage.** Three drops (of any kind) in a row, each of a call started after the
   previous one, with no success between them, set the limit to its floor and, without a
   Retry-After, pause new calls for an exponential backoff (0.5 s doubling to 10 s); the
   rate estimate is left alone. The first probe that succeeds restarts at half the last
   good limit.
5. **Pauses.** A Retry-After holds back *new* calls until it ends; calls in flight finish.
6. **Fractional limit.** The limit is a real number: the slots below it are always open and
   the last one for the fractional share of the time.
7. **Rate cap.** With ``rate_max > 0`` the pace never exceeds it (source "configured" until
   the upstream says more).

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
from typing import Literal

__all__ = ["RATE_SOURCES", "AdaptiveLimiter", "LimiterState", "Permit", "Quota", "Source"]

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
# The paced rate. Between probes the pace is the estimate less CRUISE_MARGIN: enough to
# absorb a little timing jitter, little enough to keep >= 0.98 of the allowed rate.
CRUISE_MARGIN = 0.015
# A measurement between two refusals needs this many accepted calls: fewer says "still too
# fast" (QUICK_CUT) rather than a rate.
MIN_SAMPLE_CALLS = 10
QUICK_CUT = 0.85
# Refused again and again soon after each pause: each such segment between two refusals
# sent faster than the upstream refills, so its calls are what the pause refilled (up to
# the bucket's size) plus the rate times the sending time. Over the last
# DRAIN_FIT_SEGMENTS of them the rate and bucket size that fit best (`_fit_refill`)
# replace QUICK_CUT's guess: a first estimate 2-5x too high (calls accepted in slow start's
# first burst) fell one step per refusal, 8-18 refusals, and now falls in three or four.
DRAIN_FIT_SEGMENTS = 3
# A segment counts only when it sent for at most this share of its pause: a refill that
# waits longer than the pause ends, as a fixed window's quota does, breaks the model.
DRAIN_SEND_SHARE = 0.5
# ...and the segments' sending times must differ by this many calls at the fitted rate:
# segments sent at one pace fit a window and a bucket alike (S2 fell to 2/3 of its rate).
DRAIN_FIT_SPREAD_CALLS = 3.0
# The first refusal's estimate is at least the calls granted over its last
# FIRST_RATE_WINDOW_S: slow start ramps from a few calls per round trip, so the average since
# the start was 0.58 of the allowed rate behind a bucket of 0.1 s (the demo's 300/s: 173/s),
# and a probe from there took 20 s to find the rest. A first estimate too high costs a
# refusal or two instead, now that `_fit_refill` brings it down.
FIRST_RATE_WINDOW_S = 0.5
# A measurement also needs this much sending time, and this many times the last pause: a
# pause refills the bucket by up to its size, which only a long interval makes negligible.
MIN_SAMPLE_S = 2.0
MIN_SAMPLE_PAUSES = 5.0
# Cruise refusals while refusals cost at most this share of the time (their pauses and the
# refused calls, decayed over JITTER_TAU_S) are timing jitter, not a rate too high: calls
# reach the upstream milliseconds off their spacing over real HTTP (asyncio timers,
# event-loop stalls that release calls together), so a strict-spacing limiter refuses now
# and then at any pace near its rate. Trimming the estimate for each such refusal ratcheted
# a strict 100/s down to 30-50/s; within this budget the estimate holds. The budget allows
# a bare 503 per second at 100/s, and a 1 s Retry-After per 100 s.
JITTER_COST = 0.01
JITTER_TAU_S = 20.0
# A cruise measurement below this share of the estimate means the allowed rate fell.
CHANGE_RATIO = 0.9
# Probing: after the probe wait the pace rises by PROBE_GAIN * (2^(t / PROBE_RAMP_S) - 1),
# so a rate that doubled is found within about 6 s of the probe starting, up to PROBE_MAX
# times the estimate; held there PROBE_HOLD_S without a refusal, that is the new estimate.
PROBE_GAIN = 0.02
PROBE_RAMP_S = 1.0
PROBE_MAX = 2.0
PROBE_HOLD_S = 2.0
# A refused probe moves the estimate this share of the way (in log) to the refused pace: a
# bucket absorbs the start of a probe, so the refused pace overshoots the allowed rate.
PROBE_STEP = 0.5
# ...unless the probe had sent fewer than this many calls above the cruise when it was
# refused: then the bucket is tiny and the refused pace is the allowed rate, give or take.
TINY_PROBE_CALLS = 5.0
# Likewise when a probe is refused within SAME_PACE of the pace the previous probe was
# refused at (each ramped from a different estimate).
SAME_PACE = 0.05
# The wait before a probe: short after a change, PROBE_WAIT_GROWTH times longer after each
# failed probe, up to the maximum and to PROBE_COST_RATIO times the pause a failed probe
# cost (so failed probes cost <= 1/PROBE_COST_RATIO of the time: a 1 s Retry-After allows
# one per 40 s). Tripling rather than doubling spends one probe fewer in the first half
# minute, which behind a small bucket is a 1 s Retry-After fewer (simulator, 10 seeds:
# burst 10 0.907 -> 0.925, the demo's shape 0.905 -> 0.915, the steps 0.84 -> 0.87); a
# rise is found ~1 s later on average (x4: 16 s later).
PROBE_WAIT_MIN_S = 2.0
PROBE_WAIT_GROWTH = 3.0
PROBE_WAIT_MAX_S = 60.0
PROBE_COST_RATIO = 40.0
# A 503 counts as a capacity signal when its call started with the limit in use and more
# calls in flight than any accepted call within this window, or when nothing was accepted
# for this long; otherwise it is a rate refusal.
DEPTH_WINDOW_S = 5.0
# With quota headers, a window without a fresh header is paced at the last limit per window
# (never below this rate), so a reset does not release every waiting call at once.
QUOTA_MIN_RATE = 1.0
# Time constant of the smoothed success rate exported as a gauge.
RATE_WINDOW_S = 5.0
# asyncio's timers fire late: epoll waits in whole milliseconds, rounded up, and the woken
# task runs an iteration later, 1.5-1.9 ms late here at an even 100/s. Scheduling each call
# 1/pace after the previous grant slowed a 100/s pace to 86/s. So the pacer learns the usual
# lateness (a moving average of the lateness of grants the pacer held back, each counted up
# to TIMER_LATENESS_MAX_S) and schedules the next call 1/pace after the later of "this one
# was due" and "now less LATENESS_ALLOWANCE times the usual lateness": late timers keep to
# the schedule, a stall (or a wait for a slot) does not entitle the next call to come
# early, which a strict spacing (burst 1) would refuse.
TIMER_LATENESS_MAX_S = 0.003
TIMER_LATENESS_GAIN = 0.1
LATENESS_ALLOWANCE = 2.0
# ...and for paces of at most 1/PRECISE_GAP_MIN_S the asyncio wrapper arms its timer
# TIMER_EARLY_S early and sleeps the rest (blocking the event loop for 0.55 ms on average,
# at most 11 % of its time at 200/s): grants land within ~0.1 ms of their time instead of
# 0-1 ms late, which a strict spacing limiter at 100/s (10 ms apart) tells apart.
TIMER_EARLY_S = 0.0011
PRECISE_GAP_MIN_S = 0.005
# Floating-point slack when comparing credit and tokens at the instant a timer computed.
_EPS = 1e-9


Source = Literal["none", "measured", "headers", "configured"]
"""Where the paced rate comes from: nothing yet (unpaced), refusals measured, the upstream's
quota headers, or the configured STREAM_RATE_MAX."""
RATE_SOURCES: tuple[Source, ...] = ("none", "measured", "headers", "configured")


@dataclass(frozen=True, slots=True)
class Quota:
    """What a response's rate-limit headers said: `remaining` calls of `limit` until the
    window resets in `reset_s` seconds (`window_s` long, when the headers name it)."""

    remaining: float
    reset_s: float
    limit: float | None = None
    window_s: float | None = None


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
        "_depth",
        "_epoch",
        "_level",
        "_limiter",
        "_pace",
        "_reported",
        "_seq",
        "started_at",
    )

    def __init__(
        self,
        limiter: AdaptiveLimiter,
        started_at: float,
        epoch: int,
        level: float,
        seq: int,
        depth: int,
        pace: float,
    ) -> None:
        self._limiter = limiter
        self._epoch = epoch  # the limiter's drop epoch when the call started
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
            self._limiter._on_success(self, latency_s, quota)

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
            self._limiter._on_drop(self, retry_after_s, status, quota)

    def ignore(self) -> None:
        """The outcome says nothing about capacity (e.g. a 400): just free the slot."""
        if not self._reported:
            self._reported = True
            self._limiter._on_ignore(self)

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
    """A paced rate and a loss-driven AIMD concurrency limit, with Retry-After pauses.

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
        self._epoch = 0  # bumped by every drop that is news; a permit remembers its epoch
        self._w_max = 0.0  # the level at which the last acted-on drop happened
        self._near_since: float | None = None  # since when the limit is near or above _w_max
        self._calm_since = now  # the last decrease, or the end of the pause after it
        self._streak = 0  # news drops since a call of the current epoch succeeded
        self._last_good = float(initial_limit)  # the limit at the last success before an outage
        self._outage = False
        self._last_success_at = now
        self._paused_until = -math.inf
        # The fractional slot's credit in slot-seconds (<= 0), integrated up to _credit_at.
        self._credit = 0.0
        self._credit_at = now
        # The pacer: no call before _next_send; calls granted so far.
        self._rate_max = rate_max
        self._next_send = -math.inf
        self._granted = 0
        # The rate estimate and the probe cycle.
        self._estimate: float | None = None
        self._estimate_pending = False  # refused before a rate could be measured
        self._anchor_at = now  # the refusal the next measurement starts from (or the start)
        self._anchor_seq = 0  # permits are numbered from 1
        self._refused_since_anchor = 0
        self._paused_total = 0.0  # seconds of pauses so far, to take out of measurements
        self._last_pause = 0.0  # the length of the last pause begun
        self._anchor_paused = 0.0  # _paused_total at the anchor
        self._cruise_since = now
        self._probe_wait = PROBE_WAIT_MIN_S
        self._held: float | None = None  # an estimate whose cruise held until a probe
        self._refused_cruise: float | None = None  # the lowest cruise pace refused lately
        self._refused_probe: float | None = None  # the pace the last refused probe had
        # Short cruise segments in a row: (accepted, sending s, paused s) each.
        self._drained: list[tuple[float, float, float]] = []
        self._first_grants: collections.deque[float] = collections.deque(maxlen=4096)
        self._pace_bound_at = -math.inf  # the last time the pacer held back a call
        self._held_back = False  # the pacer held back a call since the last paced grant
        self._timer_lateness = 0.0  # usual lateness of a grant the pacer held back
        self._cost = 0.0  # seconds refusals cost, decayed over JITTER_TAU_S up to _cost_at
        self._cost_at = now
        # Most calls in flight under which a call was accepted, lately; before any answer,
        # the initial limit (a burst of that size refused is a rate limiter's doing).
        self._depth_ok = initial_limit
        self._in_flight_seqs: dict[int, None] = {}  # in start order: the oldest first
        self._depth_ok_at = now
        # Quota headers: the pace they set, until when, and the last limit per window.
        self._quota_pace = 0.0
        self._quota_until = -math.inf
        self._quota_end = -math.inf  # the tightest estimate of the current window's end
        self._quota_remaining = math.inf
        self._quota_window_rate = 0.0
        self._quota_window = 0.0  # seconds: named by the headers, or the longest reset seen
        # Smoothed success rate: an exponentially decayed count of successes.
        self._rate_count = 0.0
        self._rate_at = now
        self._drops = 0
        self._decreases = 0
        self._pauses = 0
        self._refusals = 0
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
        pace = self._pace(now)
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
            estimated_rate=self._estimate,
            paced_rate=pace if math.isfinite(pace) else None,
            source=self._source(now),
            refusals=self._refusals,
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
        pace = self._pace(now)
        if now < self._next_send - _EPS:
            self._pace_bound_at = now
            self._held_back = True
            return None
        if math.isfinite(pace):
            if self._held_back:  # granted when a timer fired
                late = min(max(0.0, now - self._next_send), TIMER_LATENESS_MAX_S)
                self._timer_lateness += TIMER_LATENESS_GAIN * (late - self._timer_lateness)
                self._held_back = False
            due = max(self._next_send, now - LATENESS_ALLOWANCE * self._timer_lateness)
            self._next_send = due + 1.0 / pace
        self._in_flight += 1
        self._granted += 1
        if self._estimate is None:
            self._first_grants.append(now)
        self._in_flight_seqs[self._granted] = None
        return Permit(self, now, self._epoch, self._limit, self._granted, self._in_flight, pace)

    def next_attempt_at(self) -> float | None:
        """The earliest clock time at which `try_acquire` may succeed if no report arrives.

        None: only a report (a call finishing) can open a slot. A time <= now: try now.
        """
        now = self._clock()
        at = max(now, self._paused_until, self._next_send)
        self._integrate(now)
        base = math.floor(self._limit)
        if self._in_flight >= base:
            frac = self._limit - base
            if self._in_flight > base or frac <= 0:
                return None
            at = max(at, now - self._credit / frac)
        return at

    # ------------------------------------------------------------------ asyncio wrapper

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
            early = TIMER_EARLY_S if self._pace(now) * PRECISE_GAP_MIN_S <= 1.0 else 0.0
            self._timer = self._loop.call_later(max(0.0, at - now - early), self._on_timer)

    def _on_timer(self) -> None:
        wait = self._timer_at - self._clock()
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

    def _grantable(self, now: float) -> int:
        """How many permits `try_acquire` would grant in a row right now."""
        if now < self._paused_until:
            return 0
        self._integrate(now)
        slots = math.floor(self._limit) - self._in_flight
        if slots <= 0:
            slots = 1 if self._slot_open() else 0
        if math.isfinite(self._pace(now)) and slots > 0:
            if now < self._next_send - _EPS:
                self._pace_bound_at = now  # callers wait for the pacer
                self._held_back = True
                return 0
            return 1
        return slots

    # ------------------------------------------------------------------ reports

    def _on_success(self, permit: Permit, latency_s: float, quota: Quota | None) -> None:
        now = self._clock()
        self._integrate(now)
        in_use = self._in_flight >= IN_USE_RATIO * self._limit
        self._release(permit)
        decay = math.exp(-(now - self._rate_at) / RATE_WINDOW_S)
        self._rate_count = self._rate_count * decay + 1.0
        self._rate_at = now
        since_last = max(0.0, now - self._last_success_at)
        self._last_success_at = now
        if permit._depth >= self._depth_ok or now - self._depth_ok_at > DEPTH_WINDOW_S:
            self._depth_ok, self._depth_ok_at = permit._depth, now
        calm = self._streak == 0  # no drop since the previous success
        self._streak = 0  # the upstream accepts calls: whatever failed, it is not an outage
        if self._outage and permit._epoch == self._epoch:  # a call of the current conditions
            self._outage = False
            # Measure the rate afresh, and cruise before probing again.
            self._restart_cruise(now, self._granted, now, self._paused_total)
            self._w_max = self._ssthresh = self._last_good
            self._set_limit(max(self._limit, self._last_good * RESTART_FRACTION))
        elif calm and not self._outage and permit._epoch == self._epoch:
            # The limit under which calls still succeed. Not from a call sent before the
            # last drop: when the upstream dies, those still answer between the first drops,
            # and took each cut limit as good (79 became 3.7 within a second over HTTP).
            self._last_good = self._limit
        if quota is not None:
            self._on_quota(now, quota, permit)
        if self._estimate_pending and self._estimate is None and latency_s > 0:
            # Refused before a rate could be measured: start from what the concurrency
            # sends (the limit per round trip), the measurements take it from there.
            self._estimate = self._limit / latency_s
            self._estimate_pending = False
        if in_use:
            self._grow(now, since_last)
        self._wake()

    def _on_drop(
        self,
        permit: Permit,
        retry_after_s: float | None,
        status: int | None,
        quota: Quota | None,
    ) -> None:
        now = self._clock()
        self._integrate(now)
        self._release(permit)
        self._drops += 1
        calm = max(0.0, now - self._calm_since)  # before this drop's own pause extends it
        paused = self._paused_total  # before this drop's own pause adds to it
        if retry_after_s is not None and retry_after_s > 0:
            self._pause(now + retry_after_s)
        if quota is not None:
            self._on_quota(now, quota, permit)
        refusal = status == 429 or (
            status == 503 and not self._explained_by_concurrency(permit, now)
        )
        if refusal:
            self._refusals += 1
        if permit._epoch == self._epoch:  # news: no drop has reacted to this round trip yet
            self._epoch += 1
            self._streak += 1
            # A call started earlier and still in flight may yet succeed: not an outage yet.
            older_alive = bool(self._in_flight_seqs) and next(iter(self._in_flight_seqs)) < (
                permit._seq
            )
            if self._streak >= OUTAGE_STREAK and not older_alive:
                self._enter_outage(permit.started_at, retry_after_s)
            elif refusal:
                if not self._outage:
                    self._on_refusal(now, permit, paused)
            else:
                self._decrease(permit._level, calm)
            self._calm_since = max(now, self._paused_until)
        elif refusal and not self._outage:
            self._refused_since_anchor += 1
        self._wake()

    def _on_ignore(self, permit: Permit) -> None:
        self._integrate(self._clock())
        self._release(permit)
        self._wake()

    def _release(self, permit: Permit) -> None:
        self._in_flight -= 1
        del self._in_flight_seqs[permit._seq]

    # ------------------------------------------------------------------ the concurrency limit

    def _explained_by_concurrency(self, permit: Permit, now: float) -> bool:
        """A 503 is about capacity if its call started deeper than accepted calls lately,
        with the limit in use, or when no call was accepted for a while (an outage)."""
        if now - self._last_success_at > DEPTH_WINDOW_S:
            return True
        return permit._depth > self._depth_ok and permit._depth >= IN_USE_RATIO * permit._level

    def _decrease(self, level: float, calm: float) -> None:
        """A capacity drop that is news: shrink the limit the call started under."""
        self._decreases += 1
        # The level that failed is the limit the call started under, not one that slow
        # start may have doubled since.
        level = min(self._limit, level)
        beta = BETA_MAX - (BETA_MAX - BETA_MIN) * math.exp(-calm / CALM_TAU_S)
        self._w_max = level
        self._near_since = None
        self._set_limit(level * beta)
        self._ssthresh = self._limit

    def _enter_outage(self, started_at: float, retry_after_s: float | None) -> None:
        if not self._outage:
            self._decreases += 1
        self._outage = True
        self._set_limit(self._min)
        self._ssthresh = self._min
        if retry_after_s is None:
            # Space the *starts* of probes: one that took a whole client timeout to fail
            # has waited already.
            exponent = min(30, self._streak - OUTAGE_STREAK)
            backoff = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0**exponent)
            self._pause(started_at + backoff)

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

    # ------------------------------------------------------------------ the paced rate

    def _on_refusal(self, now: float, permit: Permit, paused: float) -> None:
        """A rate refusal that is news: the upstream's bucket (or window) was empty.

        `paused` is the pause time so far before this refusal's own Retry-After: paused
        time is taken out of the measurement (a small bucket overflows while we wait).
        """
        seq, at = permit._seq, permit.started_at
        if seq <= self._anchor_seq:  # sent before the refusal we measure from: stale
            return
        accepted = seq - self._anchor_seq - 1 - self._refused_since_anchor
        if accepted < 1:  # nothing accepted in between: an outage beginning, or too fast
            self._refused_since_anchor += 1
            if self._paused_until <= now:  # no Retry-After: hold back as an outage would
                self._pause(permit.started_at + BACKOFF_BASE_S)
            return
        elapsed = at - self._anchor_at - (paused - self._anchor_paused)
        estimate = self._estimate
        # What this refusal cost: its own pause (a Retry-After) and the refused call.
        self._cost = self._refusal_cost(now) * JITTER_TAU_S + self._paused_total - paused
        self._cost += 1.0 / estimate if estimate else 0.0
        self._cost_at = now
        if estimate is None:
            # The first refusal: the bucket was full at the start, so this is high. Too
            # few calls for a rate, or no time for one (a burst refused in the instant it
            # was sent): the next success sets one instead.
            span = max(elapsed, now - self._anchor_at)
            if accepted >= MIN_SAMPLE_CALLS and span > 0:
                recent = sum(1 for t in self._first_grants if t >= at - FIRST_RATE_WINDOW_S)
                self._estimate = max(accepted / span, recent / FIRST_RATE_WINDOW_S)
            else:
                self._estimate_pending = True
            self._first_grants.clear()
            self._restart_cruise(now, seq, at, paused)
            return
        pause = paused - self._anchor_paused
        long_enough = elapsed >= MIN_SAMPLE_PAUSES * self._last_pause
        # Half the pause counted as sending time: a bucket that overflowed while we waited
        # makes the count low, one that did not makes it high (by up to the pause's refill).
        sample = (
            accepted / (elapsed + pause / 2)
            if accepted >= MIN_SAMPLE_CALLS and long_enough
            else None
        )
        cruise = estimate * (1.0 - CRUISE_MARGIN)
        if permit._pace > cruise * (1.0 + 1e-6):  # refused during a probe
            into = permit.started_at - self._cruise_since - self._probe_wait
            gain = PROBE_GAIN * (
                PROBE_RAMP_S / math.log(2) * (2.0 ** (into / PROBE_RAMP_S) - 1) - into
            )
            again, self._refused_probe = self._refused_probe, permit._pace
            if cruise * gain < TINY_PROBE_CALLS:  # calls sent above the cruise so far
                step = permit._pace / (1.0 + CRUISE_MARGIN)
            elif again is not None and abs(permit._pace / again - 1.0) <= SAME_PACE:
                # Refused at the pace the last probe was refused at, from another start: a
                # bucket would have let a ramp from lower go further. That pace is the rate.
                step = min(permit._pace, again) / (1.0 + 2 * CRUISE_MARGIN)
            else:
                step = estimate * (permit._pace / estimate) ** PROBE_STEP
            if self._refused_cruise is not None:  # stay below a cruise that was refused
                step = min(step, math.sqrt(estimate * self._refused_cruise))
            raised = max(estimate, step, sample or 0.0)
            self._drained.clear()
            self._held = estimate  # its cruise held through the probe wait
            if raised >= estimate / CHANGE_RATIO:  # the allowed rate rose: probe again soon
                self._probe_wait = PROBE_WAIT_MIN_S
            else:
                cost = max(PROBE_WAIT_MIN_S, PROBE_COST_RATIO * (self._paused_total - paused))
                self._probe_wait = min(PROBE_WAIT_MAX_S, cost, PROBE_WAIT_GROWTH * self._probe_wait)
            self._estimate = raised
        else:
            jitter = self._refusal_cost(now) <= JITTER_COST
            segment = (float(accepted), elapsed, pause)
            self._on_cruise_refusal(estimate, cruise, segment, sample, jitter)
        self._restart_cruise(now, seq, at, paused)

    def _on_cruise_refusal(
        self,
        estimate: float,
        cruise: float,
        segment: tuple[float, float, float],
        sample: float | None,
        jitter: bool,
    ) -> None:
        """Refused while cruising: the estimate is too high (or the rate fell, or jitter).

        `segment` is (calls accepted, seconds sending, seconds paused) since the previous
        refusal; `jitter`: refusals lately cost at most JITTER_COST of the time.
        """
        accepted, elapsed, pause = segment
        short = accepted < MIN_SAMPLE_CALLS or elapsed < MIN_SAMPLE_S
        drained = self._drained
        if accepted >= MIN_SAMPLE_CALLS and elapsed <= DRAIN_SEND_SHARE * pause and not jitter:
            drained.append(segment)
            del drained[:-DRAIN_FIT_SEGMENTS]
        else:
            drained.clear()
        if not jitter:  # jitter says nothing about the cruise being too fast
            self._refused_cruise = min(cruise, self._refused_cruise or math.inf)
        held, self._held = self._held, None
        if held is not None and held < estimate and sample is None:
            # A probe raised it too far: halfway back to the estimate whose cruise held.
            self._estimate = math.sqrt(held * estimate)
        elif (
            jitter
            and accepted >= MIN_SAMPLE_CALLS
            and (sample is None or sample >= CHANGE_RATIO * estimate)
        ):
            pass  # timing jitter at a rate that holds: cheaper to pay than to slow down
        elif short:  # refused again soon: still too fast
            fitted = _fit_refill(drained) if len(drained) >= 2 else None
            if fitted is None or fitted > estimate * QUICK_CUT:
                self._estimate = estimate * QUICK_CUT
            else:  # the allowed rate is lower than thought, or fell: probe again soon
                self._estimate = fitted
                self._probe_wait = PROBE_WAIT_MIN_S
        elif sample is None:
            self._estimate = estimate * (1.0 - 2 * CRUISE_MARGIN)  # too short to measure
        # The cruise drained the bucket, so the calls accepted are the pause's refill plus
        # R * sending time: their rate with no refill at all bounds R from above. Judged by
        # `sample` (half the pause's refill), a cruise 3 % too fast behind a small bucket
        # passed for a fall of the rate (over HTTP, 314.7 became 277.4 for 300/s).
        elif accepted / elapsed < CHANGE_RATIO * estimate:  # the allowed rate fell
            self._estimate = sample
            self._probe_wait = PROBE_WAIT_MIN_S
        else:  # a little too high, or timing jitter
            self._estimate = min(estimate * (1.0 - CRUISE_MARGIN), accepted / elapsed)

    def _refusal_cost(self, now: float) -> float:
        """The share of time refusals cost lately (their pauses and the refused calls)."""
        return self._cost * math.exp(-(now - self._cost_at) / JITTER_TAU_S) / JITTER_TAU_S

    def _restart_cruise(self, now: float, seq: int, at: float, paused: float) -> None:
        """Measure from this refusal on; cruise from the end of its pause."""
        self._anchor_seq, self._anchor_at, self._refused_since_anchor = seq, at, 0
        # The pause from the refusal's send to now is not in `paused`: count it as paused.
        self._anchor_paused = paused - (now - at)
        self._cruise_since = max(now, self._paused_until)

    def _on_quota(self, now: float, quota: Quota, permit: Permit) -> None:
        """Pace to spend what the upstream says is left evenly until its window resets."""
        end = now + max(0.0, quota.reset_s)
        # An answer is overtaken by up to the calls granted after its own (not only those
        # still in flight: taking a slow answer for a new window moved the window's end out
        # and under-spent every window by ~3 %); more than that, or the old window's end
        # passing, is a new window.
        overtaken = self._granted - permit._seq
        if now >= self._quota_end or quota.remaining > self._quota_remaining + overtaken + 1:
            self._quota_end = end
            self._quota_remaining = quota.remaining
        else:
            self._quota_end = min(self._quota_end, end)  # resets round up: keep the tightest
            self._quota_remaining = min(self._quota_remaining, quota.remaining)
        left = self._quota_end - now
        # The window's length: named by the headers, or the longest reset seen.
        self._quota_window = quota.window_s or max(self._quota_window, quota.reset_s, 1.0)
        if quota.limit is not None and quota.limit > 0:
            self._quota_window_rate = quota.limit / self._quota_window
        spendable = self._quota_remaining - self._in_flight
        self._quota_until = self._quota_end
        if spendable < 1 or left <= 0:
            self._quota_pace = self._quota_window_rate or QUOTA_MIN_RATE
            if self._quota_remaining < 1:
                self._pause(self._quota_end)
        else:
            self._quota_pace = spendable / left

    def _pace(self, now: float) -> float:
        """Calls per second the pacer allows at `now` (inf: unpaced)."""
        cap = self._rate_max if self._rate_max > 0 else math.inf
        if now < self._quota_until:
            return min(cap, self._quota_pace)
        if self._quota_window_rate > 0:
            return min(cap, self._quota_window_rate)
        estimate = self._estimate
        if estimate is None:
            return cap
        pace = estimate * (1.0 - CRUISE_MARGIN)
        probing = now - self._cruise_since - self._probe_wait
        if probing > 0:
            ramp = 1.0 + PROBE_GAIN * (2.0 ** min(30.0, probing / PROBE_RAMP_S) - 1.0)
            if ramp >= PROBE_MAX:
                reached = PROBE_RAMP_S * math.log2(1.0 + (PROBE_MAX - 1.0) / PROBE_GAIN)
                if probing - reached >= PROBE_HOLD_S and now - self._pace_bound_at < 1.0:
                    # Held twice the estimate without a refusal, and in use: that is the rate.
                    self._estimate = estimate * PROBE_MAX
                    self._held, self._refused_cruise = estimate, None
                    self._cruise_since = now
                    self._probe_wait = PROBE_WAIT_MIN_S
                ramp = PROBE_MAX
            pace *= ramp
        return min(cap, pace)

    def _source(self, now: float) -> Source:
        if now < self._quota_until or self._quota_window_rate > 0:
            return "headers"
        if self._estimate is not None:
            return "measured"
        return "configured" if self._rate_max > 0 else "none"

    # ------------------------------------------------------------------ helpers

    def _pause(self, until: float) -> None:
        now = self._clock()
        if until > max(now, self._paused_until):
            if self._paused_until <= now:
                self._pauses += 1
            self._paused_total += until - max(now, self._paused_until)
            self._last_pause = until - max(now, self._paused_until)
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


def _fit_refill(segments: list[tuple[float, float, float]]) -> float | None:
    """The refill rate R that best explains segments sent faster than the upstream refills.

    Each segment (accepted A, sending s, paused p) began and ended with the bucket empty, so
    A = min(B, R * p) + R * s for the bucket size B: a bucket smaller than a pause's refill
    gives A = B + R * s (the slope of A over s), a fixed window (or a big bucket) gives
    A = R * (p + s). R is searched on a 1 % grid from the highest A / (p + s), which no
    bucket can beat, to the highest A / s, least squares over B taken from the segments.
    None when the segments cannot tell the rate: they sent nothing, or for as long.
    """
    floor = max((a / (s + p) for a, s, p in segments if s + p > 0), default=0.0)
    top = max((a / s for a, s, _ in segments if s > 0), default=0.0)
    if floor <= 0 or top <= floor:
        return floor if floor > 0 else None
    best, best_error = floor, math.inf
    rate = floor
    while rate <= top:
        refills = [a - rate * s for a, s, _ in segments]
        caps = [rate * p for _, _, p in segments]
        for size in (*refills, math.inf):
            error = sum((c - min(size, cap)) ** 2 for c, cap in zip(refills, caps, strict=True))
            if error < best_error - 1e-9:
                best, best_error = rate, error
        rate *= 1.01
    sending = [s for _, s, _ in segments]
    if (max(sending) - min(sending)) * best < DRAIN_FIT_SPREAD_CALLS:
        return None  # sent for as long each time: a window and a bucket fit alike
    return best
