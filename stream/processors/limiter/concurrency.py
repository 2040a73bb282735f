"""The concurrency limit: loss-driven AIMD over the calls in flight, with a fractional slot.

Latency never shrinks it, so an upstream that is merely slow keeps its full concurrency.

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
   Retry-After, ask for a pause of an exponential backoff (0.5 s doubling to 10 s). The
   first probe that succeeds restarts at half the last good limit.
5. **Fractional limit.** The limit is a real number: the slots below it are always open and
   the last one for the fractional share of the time.
"""

from __future__ import annotations

import math

from stream.processors.limiter.pause import Pauses

__all__ = [
    "BACKOFF_BASE_S",
    "BETA_MAX",
    "BETA_MIN",
    "RESTART_FRACTION",
    "ConcurrencyLimit",
]

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
# A 503 counts as a capacity signal when its call started with the limit in use and more
# calls in flight than any accepted call within this window, or when nothing was accepted
# for this long; otherwise it is a rate refusal.
DEPTH_WINDOW_S = 5.0
# Floating-point slack when comparing credit at the instant a timer computed.
_EPS = 1e-9


class ConcurrencyLimit:
    """The limit on calls in flight, the calls in flight, and the drops' epochs.

    A call remembers the `epoch` it started in: a drop of a call of the current epoch is
    news (the first reaction to its round trip) and starts a new epoch.
    """

    def __init__(
        self, min_limit: int, max_limit: int, initial_limit: int, pauses: Pauses, now: float
    ) -> None:
        self._pauses = pauses
        self._min = float(min_limit)
        self._max = float(max_limit)
        self.limit = float(initial_limit)
        self.in_flight = 0
        self._ssthresh = self._max  # slow start while the limit is below it
        self.epoch = 0  # bumped by every drop that is news; a permit remembers its epoch
        self._w_max = 0.0  # the level at which the last acted-on drop happened
        self._near_since: float | None = None  # since when the limit is near or above _w_max
        self._calm_since = now  # the last news drop (pauses' ends count too, see `calm`)
        self._streak = 0  # news drops since a call of the current epoch succeeded
        self._last_good = float(initial_limit)  # the limit at the last success before an outage
        self.outage = False
        self._last_success_at = now
        # The fractional slot's credit in slot-seconds (<= 0), integrated up to _credit_at.
        self._credit = 0.0
        self._credit_at = now
        # Most calls in flight under which a call was accepted, lately; before any answer,
        # the initial limit (a burst of that size refused is a rate limiter's doing).
        self._depth_ok = initial_limit
        self._depth_ok_at = now
        self._in_flight_seqs: dict[int, None] = {}  # in start order: the oldest first
        self.decreases = 0

    # ------------------------------------------------------------------ slots

    def slot_open(self) -> bool:
        """A slot below the limit is free (the fractional one only while it has credit)."""
        base = math.floor(self.limit)
        if self.in_flight < base:
            return True
        return self.in_flight == base and self.limit > base and self._credit >= -_EPS

    def grantable(self) -> int:
        """How many calls could start now as far as the slots go."""
        slots = math.floor(self.limit) - self.in_flight
        if slots <= 0:
            slots = 1 if self.slot_open() else 0
        return slots

    def open_at(self, now: float) -> float | None:
        """The earliest time a slot opens if no call finishes; None: only a report can."""
        base = math.floor(self.limit)
        if self.in_flight >= base:
            frac = self.limit - base
            if self.in_flight > base or frac <= 0:
                return None
            return now - self._credit / frac
        return now

    def integrate(self, now: float) -> None:
        """Advance the fractional slot's credit: +frac per second, -1 while it is in use."""
        dt = now - self._credit_at
        if dt <= 0:
            return
        base = math.floor(self.limit)
        used = min(1, max(0, self.in_flight - base))
        self._credit = min(0.0, self._credit + (self.limit - base - used) * dt)
        self._credit_at = now

    def take(self, seq: int) -> None:
        """Call `seq` (numbered in start order) starts."""
        self.in_flight += 1
        self._in_flight_seqs[seq] = None

    def release(self, seq: int) -> None:
        self.in_flight -= 1
        del self._in_flight_seqs[seq]

    # ------------------------------------------------------------------ reports

    def on_success(self, now: float, seq: int, epoch: int, depth: int) -> tuple[bool, float, bool]:
        """A call succeeded: (the limit was in use, seconds since the previous success,
        an outage just ended)."""
        self.integrate(now)
        in_use = self.in_flight >= IN_USE_RATIO * self.limit
        self.release(seq)
        since_last = max(0.0, now - self._last_success_at)
        self._last_success_at = now
        if depth >= self._depth_ok or now - self._depth_ok_at > DEPTH_WINDOW_S:
            self._depth_ok, self._depth_ok_at = depth, now
        calm = self._streak == 0  # no drop since the previous success
        self._streak = 0  # the upstream accepts calls: whatever failed, it is not an outage
        if self.outage and epoch == self.epoch:  # a call of the current conditions
            self.outage = False
            self._w_max = self._ssthresh = self._last_good
            self._set_limit(max(self.limit, self._last_good * RESTART_FRACTION))
            return in_use, since_last, True
        if calm and not self.outage and epoch == self.epoch:
            # The limit under which calls still succeed. Not from a call sent before the
            # last drop: when the upstream dies, those still answer between the first drops,
            # and took each cut limit as good (79 became 3.7 within a second over HTTP).
            self._last_good = self.limit
        return in_use, since_last, False

    def calm(self, now: float) -> float:
        """Seconds since the last news drop, or the end of the pause after it."""
        return max(0.0, now - max(self._calm_since, self._pauses.until))

    def explains(self, now: float, depth: int, level: float) -> bool:
        """A 503 is about capacity if its call started deeper than accepted calls lately,
        with the limit in use, or when no call was accepted for a while (an outage)."""
        if now - self._last_success_at > DEPTH_WINDOW_S:
            return True
        return depth > self._depth_ok and depth >= IN_USE_RATIO * level

    def on_news(self, now: float, seq: int) -> bool:
        """A drop that is news begins a new epoch; True if it means an outage.

        A call started earlier and still in flight may yet succeed: not an outage yet.
        """
        self.epoch += 1
        self._streak += 1
        self._calm_since = now
        older_alive = bool(self._in_flight_seqs) and next(iter(self._in_flight_seqs)) < seq
        return self._streak >= OUTAGE_STREAK and not older_alive

    def decrease(self, level: float, calm: float) -> None:
        """A capacity drop that is news: shrink the limit the call started under."""
        self.decreases += 1
        # The level that failed is the limit the call started under, not one that slow
        # start may have doubled since.
        level = min(self.limit, level)
        beta = BETA_MAX - (BETA_MAX - BETA_MIN) * math.exp(-calm / CALM_TAU_S)
        self._w_max = level
        self._near_since = None
        self._set_limit(level * beta)
        self._ssthresh = self.limit

    def enter_outage(self) -> float:
        """To the floor; the backoff to pause for when the upstream named none."""
        if not self.outage:
            self.decreases += 1
        self.outage = True
        self._set_limit(self._min)
        self._ssthresh = self._min
        exponent = min(30, self._streak - OUTAGE_STREAK)
        return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0**exponent)

    def grow(self, now: float, dt: float) -> None:
        """A success arrived while the limit was in use, `dt` after the previous success."""
        if self.limit < self._ssthresh:
            self._set_limit(min(self.limit + SLOW_START_GAIN, self._ssthresh))
            return
        gap = max(0.0, self._w_max / self.limit - 1.0)
        if self.limit < self._w_max * (1.0 - NEAR_MARGIN):
            self._near_since = None
            creep = PLATEAU_GROWTH_PER_S
        else:
            if self._near_since is None:
                self._near_since = now
            doublings = min(30.0, (now - self._near_since) / PROBE_DOUBLING_S)
            creep = min(MAX_GROWTH_PER_S, PLATEAU_GROWTH_PER_S * 2.0**doublings)
        rate = max(creep, APPROACH_PER_S * gap)
        self._set_limit(self.limit + min(1.0 / self.limit, rate * self.limit * dt))

    def _set_limit(self, value: float) -> None:
        """Change the limit (after `integrate`); a new fractional slot starts with no debt."""
        value = min(self._max, max(self._min, value))
        if math.floor(value) != math.floor(self.limit):
            self._credit = 0.0
        self.limit = value
