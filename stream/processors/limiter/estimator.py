"""The rate estimator: the upstream's allowed rate, measured from its refusals, and probed.

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
   times the sending time (`fit_refill`). But while refusals cost at most JITTER_COST of
   the time, a cruise refusal is timing jitter (calls reach the upstream milliseconds off
   their spacing) and the estimate holds.
5. A refusal whose Retry-After is long (LONG_PAUSE_S or more, as a fixed window's to its
   end) bounds the estimate: the calls accepted since the previous refusal over their
   sending time and that pause (less its rounding up) is all the upstream let through.
"""

from __future__ import annotations

import collections
import math

from stream.processors.limiter.pause import Pauses

__all__ = ["CRUISE_MARGIN", "RateEstimator", "fit_refill"]

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
# DRAIN_FIT_SEGMENTS of them the rate and bucket size that fit best (`fit_refill`)
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
# refusal or two instead, now that `fit_refill` brings it down.
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

# A refusal's Retry-After of LONG_PAUSE_S or more says the upstream takes nothing for that
# long, less the rounding up to whole seconds (RETRY_AFTER_ROUNDING_S): the calls accepted
# since the previous refusal, over their sending time and that, bound the rate from above.
# That is a fixed window's rate when the pause runs to the window's end; a token bucket
# that sends so long a pause refills at most a call per pause. Without the bound, a first
# estimate from slow start's burst into a fresh window is ~25 times the window's rate, and
# until the refill fit catches up each window loses the calls sent at that pace while its
# refusal is on the way back (6-8 of 500 per 10 s simulated, up to 16 over HTTP).
LONG_PAUSE_S = 2.0
RETRY_AFTER_ROUNDING_S = 1.0


class RateEstimator:
    """The estimate of the allowed rate, and the probe cycle around it.

    `on_refusal` measures between refusals; `pace` is the pace the estimate allows now
    (a probe above it after a cruise of `probe wait`). Paused time, read from `pauses`, is
    taken out of the measurements.
    """

    def __init__(self, pauses: Pauses, now: float) -> None:
        self._pauses = pauses
        self.estimate: float | None = None
        self._estimate_pending = False  # refused before a rate could be measured
        self._anchor_at = now  # the refusal the next measurement starts from (or the start)
        self._anchor_seq = 0  # permits are numbered from 1
        self._refused_since_anchor = 0
        self._anchor_paused = 0.0  # the pauses' total at the anchor
        self._cruise_since = now
        self._probe_wait = PROBE_WAIT_MIN_S
        self._held: float | None = None  # an estimate whose cruise held until a probe
        self._refused_cruise: float | None = None  # the lowest cruise pace refused lately
        self._refused_probe: float | None = None  # the pace the last refused probe had
        # Short cruise segments in a row: (accepted, sending s, paused s) each.
        self._drained: list[tuple[float, float, float]] = []
        self._first_grants: collections.deque[float] = collections.deque(maxlen=4096)
        self._cost = 0.0  # seconds refusals cost, decayed over JITTER_TAU_S up to _cost_at
        self._cost_at = now

    def on_grant(self, now: float) -> None:
        """A call starts: before the first estimate, its time counts for the first one."""
        if self.estimate is None:
            self._first_grants.append(now)

    def on_success(self, limit: float, latency_s: float) -> None:
        """Refused before a rate could be measured: start from what the concurrency
        sends (the limit per round trip), the measurements take it from there."""
        if self._estimate_pending and self.estimate is None and latency_s > 0:
            self.estimate = limit / latency_s
            self._estimate_pending = False

    def on_stale_refusal(self) -> None:
        """A refusal that is no news (its round trip was reacted to): one call not accepted."""
        self._refused_since_anchor += 1

    def on_refusal(self, now: float, seq: int, at: float, pace: float, paused: float) -> bool:
        """A rate refusal that is news: the upstream's bucket (or window) was empty.

        The refused call was the `seq`-th granted, at `at`, under `pace`. `paused` is the
        pause time so far before this refusal's own Retry-After: paused time is taken out
        of the measurement (a small bucket overflows while we wait). False when no call
        was accepted since the refusal measured from (an outage beginning, or too fast):
        the caller holds back as an outage would.
        """
        if seq <= self._anchor_seq:  # sent before the refusal we measure from: stale
            return True
        accepted = seq - self._anchor_seq - 1 - self._refused_since_anchor
        if accepted < 1:
            self._refused_since_anchor += 1
            return False
        elapsed = at - self._anchor_at - (paused - self._anchor_paused)
        own_pause = self._pauses.total - paused  # what this refusal's Retry-After added
        estimate = self.estimate
        # What this refusal cost: its own pause (a Retry-After) and the refused call.
        self._cost = self._refusal_cost(now) * JITTER_TAU_S + self._pauses.total - paused
        self._cost += 1.0 / estimate if estimate else 0.0
        self._cost_at = now
        if estimate is None:
            # The first refusal: the bucket was full at the start, so this is high. Too
            # few calls for a rate, or no time for one (a burst refused in the instant it
            # was sent): the next success sets one instead.
            span = max(elapsed, now - self._anchor_at)
            if accepted >= MIN_SAMPLE_CALLS and span > 0:
                recent = sum(1 for t in self._first_grants if t >= at - FIRST_RATE_WINDOW_S)
                first = max(accepted / span, recent / FIRST_RATE_WINDOW_S)
                self.estimate = _capped_by_pause(first, accepted, span, own_pause)
            else:
                self._estimate_pending = True
            self._first_grants.clear()
            self.restart_cruise(now, seq, at, paused)
            return True
        pause = paused - self._anchor_paused
        long_enough = elapsed >= MIN_SAMPLE_PAUSES * self._pauses.last
        # Half the pause counted as sending time: a bucket that overflowed while we waited
        # makes the count low, one that did not makes it high (by up to the pause's refill).
        sample = (
            accepted / (elapsed + pause / 2)
            if accepted >= MIN_SAMPLE_CALLS and long_enough
            else None
        )
        cruise = estimate * (1.0 - CRUISE_MARGIN)
        if pace > cruise * (1.0 + 1e-6):  # refused during a probe
            into = at - self._cruise_since - self._probe_wait
            gain = PROBE_GAIN * (
                PROBE_RAMP_S / math.log(2) * (2.0 ** (into / PROBE_RAMP_S) - 1) - into
            )
            again, self._refused_probe = self._refused_probe, pace
            if cruise * gain < TINY_PROBE_CALLS:  # calls sent above the cruise so far
                step = pace / (1.0 + CRUISE_MARGIN)
            elif again is not None and abs(pace / again - 1.0) <= SAME_PACE:
                # Refused at the pace the last probe was refused at, from another start: a
                # bucket would have let a ramp from lower go further. That pace is the rate.
                step = min(pace, again) / (1.0 + 2 * CRUISE_MARGIN)
            else:
                step = estimate * (pace / estimate) ** PROBE_STEP
            if self._refused_cruise is not None:  # stay below a cruise that was refused
                step = min(step, math.sqrt(estimate * self._refused_cruise))
            raised = max(estimate, step, sample or 0.0)
            self._drained.clear()
            self._held = estimate  # its cruise held through the probe wait
            if raised >= estimate / CHANGE_RATIO:  # the allowed rate rose: probe again soon
                self._probe_wait = PROBE_WAIT_MIN_S
            else:
                cost = max(PROBE_WAIT_MIN_S, PROBE_COST_RATIO * (self._pauses.total - paused))
                self._probe_wait = min(PROBE_WAIT_MAX_S, cost, PROBE_WAIT_GROWTH * self._probe_wait)
            self.estimate = raised
        else:
            jitter = self._refusal_cost(now) <= JITTER_COST
            segment = (float(accepted), elapsed, pause)
            self._on_cruise_refusal(estimate, cruise, segment, sample, jitter)
        if self.estimate is not None:
            self.estimate = _capped_by_pause(self.estimate, accepted, elapsed, own_pause)
        self.restart_cruise(now, seq, at, paused)
        return True

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
            self.estimate = math.sqrt(held * estimate)
        elif (
            jitter
            and accepted >= MIN_SAMPLE_CALLS
            and (sample is None or sample >= CHANGE_RATIO * estimate)
        ):
            pass  # timing jitter at a rate that holds: cheaper to pay than to slow down
        elif short:  # refused again soon: still too fast
            fitted = fit_refill(drained) if len(drained) >= 2 else None
            if fitted is None or fitted > estimate * QUICK_CUT:
                self.estimate = estimate * QUICK_CUT
            else:  # the allowed rate is lower than thought, or fell: probe again soon
                self.estimate = fitted
                self._probe_wait = PROBE_WAIT_MIN_S
        elif sample is None:
            self.estimate = estimate * (1.0 - 2 * CRUISE_MARGIN)  # too short to measure
        # The cruise drained the bucket, so the calls accepted are the pause's refill plus
        # R * sending time: their rate with no refill at all bounds R from above. Judged by
        # `sample` (half the pause's refill), a cruise 3 % too fast behind a small bucket
        # passed for a fall of the rate (over HTTP, 314.7 became 277.4 for 300/s).
        elif accepted / elapsed < CHANGE_RATIO * estimate:  # the allowed rate fell
            self.estimate = sample
            self._probe_wait = PROBE_WAIT_MIN_S
        else:  # a little too high, or timing jitter
            self.estimate = min(estimate * (1.0 - CRUISE_MARGIN), accepted / elapsed)

    def _refusal_cost(self, now: float) -> float:
        """The share of time refusals cost lately (their pauses and the refused calls)."""
        return self._cost * math.exp(-(now - self._cost_at) / JITTER_TAU_S) / JITTER_TAU_S

    def restart_cruise(self, now: float, seq: int, at: float, paused: float) -> None:
        """Measure from this refusal on; cruise from the end of its pause."""
        self._anchor_seq, self._anchor_at, self._refused_since_anchor = seq, at, 0
        # The pause from the refusal's send to now is not in `paused`: count it as paused.
        self._anchor_paused = paused - (now - at)
        self._cruise_since = max(now, self._pauses.until)

    def pace(self, now: float, bound_at: float) -> float | None:
        """Calls per second the estimate allows at `now`; None before there is one.

        `bound_at`: the last time the pacer held back a call. A probe held at PROBE_MAX
        times the estimate for PROBE_HOLD_S without a refusal, while in use, is the rate.
        """
        estimate = self.estimate
        if estimate is None:
            return None
        pace = estimate * (1.0 - CRUISE_MARGIN)
        probing = now - self._cruise_since - self._probe_wait
        if probing > 0:
            ramp = 1.0 + PROBE_GAIN * (2.0 ** min(30.0, probing / PROBE_RAMP_S) - 1.0)
            if ramp >= PROBE_MAX:
                reached = PROBE_RAMP_S * math.log2(1.0 + (PROBE_MAX - 1.0) / PROBE_GAIN)
                if probing - reached >= PROBE_HOLD_S and now - bound_at < 1.0:
                    # Held twice the estimate without a refusal, and in use: that is the rate.
                    self.estimate = estimate * PROBE_MAX
                    self._held, self._refused_cruise = estimate, None
                    self._cruise_since = now
                    self._probe_wait = PROBE_WAIT_MIN_S
                ramp = PROBE_MAX
            pace *= ramp
        return pace


def _capped_by_pause(estimate: float, accepted: int, sending_s: float, pause_s: float) -> float:
    """The estimate, at most what a long Retry-After says the upstream lets through."""
    if pause_s < LONG_PAUSE_S:
        return estimate
    return min(estimate, accepted / (sending_s + pause_s - RETRY_AFTER_ROUNDING_S))


def fit_refill(segments: list[tuple[float, float, float]]) -> float | None:
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
