"""The simulator's engine: `simulate` runs a scenario in virtual time and returns its trace.

It drives the limiter's synchronous core (`try_acquire`, `next_attempt_at`, the permit
reports) with a virtual clock, and reports outcomes exactly like the HTTP processor: 2xx ->
success(latency, quota), 429 / 503 -> dropped(retry_after, status, quota), timeout ->
dropped(None). The upstream's rate limits are the devkit's shared models
(`stream.devkit.ratelimit`). Pure Python, no I/O, deterministic per seed.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Protocol, cast

from stream.devkit.fakes import ManualClock
from stream.devkit.limiter_sim.spec import Outcome, Phase, Scenario, Upstream
from stream.devkit.limiter_sim.trace import Call, Trace
from stream.devkit.ratelimit import FixedWindow, TokenBucket, whole_seconds
from stream.processors.limiter import AdaptiveLimiter, Quota

__all__ = ["simulate"]


class _Report(Protocol):
    def success(self, latency_s: float, quota: Quota | None = None) -> None: ...
    def dropped(
        self,
        retry_after_s: float | None = None,
        *,
        status: int | None = None,
        quota: Quota | None = None,
    ) -> None: ...


class _Gate(Protocol):
    def try_acquire(self) -> _Report | None: ...
    def next_attempt_at(self) -> float | None: ...


class _FixedPermit:
    def __init__(self, gate: _FixedGate) -> None:
        self._gate = gate

    def success(self, latency_s: float, quota: Quota | None = None) -> None:
        self._gate.in_flight -= 1

    def dropped(
        self,
        retry_after_s: float | None = None,
        *,
        status: int | None = None,
        quota: Quota | None = None,
    ) -> None:
        self._gate.in_flight -= 1


class _FixedGate:
    """A fixed concurrency, the way calls were made before the limiter."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.in_flight = 0

    def try_acquire(self) -> _FixedPermit | None:
        if self.in_flight >= self.concurrency:
            return None
        self.in_flight += 1
        return _FixedPermit(self)

    def next_attempt_at(self) -> float | None:
        return None


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the upstream answers one call, and when the client sees it."""

    outcome: Outcome
    after: float  # seconds until the client sees the answer
    occupies: bool  # whether the call holds a server slot meanwhile
    retry_after: float | None = None
    quota: Quota | None = None


class _UpstreamModel:
    """The upstream's state: its token bucket or window and the calls it is serving."""

    def __init__(self, upstream: Upstream, rng: random.Random) -> None:
        self.spec = upstream
        self.rng = rng
        self.phases = upstream.phases
        self.index = 0  # the current phase; virtual time only moves forward
        first = self.phases[0]
        full = first.rate_per_s * first.burst_s if math.isfinite(first.rate_per_s) else 0.0
        self.bucket = TokenBucket(0.0, full)
        self.window = FixedWindow(0.0)
        self.serving = 0

    def _advance(self, now: float) -> Phase:
        """Move to the phase of `now`, refilling the bucket piecewise across boundaries."""
        while self.index + 1 < len(self.phases) and self.phases[self.index + 1].at_s <= now:
            self._refill(self.phases[self.index + 1].at_s)
            self.index += 1
            self.window = FixedWindow(self.phases[self.index].at_s)
        self._refill(now)
        return self.phases[self.index]

    def _refill(self, now: float) -> None:
        phase = self.phases[self.index]
        if math.isfinite(phase.rate_per_s):
            self.bucket.refill(phase.rate_per_s, phase.rate_per_s * phase.burst_s, now)
        else:  # no rate limit: the bucket keeps what it had for a limit set later
            self.bucket.refill(0.0, math.inf, now)

    def _window(self, phase: Phase, now: float) -> tuple[bool, float, Quota]:
        """Take one call of the fixed window: (accepted, seconds to its end, quota after)."""
        quota_n = round(phase.rate_per_s * phase.window_s)
        accepted, left, remaining = self.window.take(quota_n, phase.window_s, now)
        quota = Quota(remaining, float(whole_seconds(left)), quota_n, phase.window_s)
        return accepted, left, quota

    def call(self, now: float, timeout_s: float) -> _Answer:
        """What the upstream answers a call sent at `now`."""
        arrives = now + (self.rng.uniform(0.0, self.spec.jitter_s) if self.spec.jitter_s else 0.0)
        phase = self._advance(arrives)
        reject = self.spec.reject_latency_s
        if phase.mode == "fail_fast":
            return _Answer("503", reject, False)
        if phase.mode == "black_hole":
            return _Answer("timeout", timeout_s, False)
        if phase.max_concurrency is not None and self.serving >= phase.max_concurrency:
            return _Answer("503", reject, False)
        quota = None
        if phase.window_s > 0:
            accepted, left, window_quota = self._window(phase, arrives)
            quota = window_quota if phase.quota_headers else None
            if not accepted:
                return _Answer("429", reject, False, float(whole_seconds(left)), quota)
        elif math.isfinite(phase.rate_per_s):
            size = phase.rate_per_s * phase.burst_s
            if self.bucket.take(phase.rate_per_s, size, arrives) > 0:
                if phase.refuse_503:
                    return _Answer("503", reject, False)
                return _Answer("429", reject, False, self.spec.retry_after_s)
        latency = phase.latency.sample(self.rng)
        self.serving += 1
        if latency > timeout_s:  # the server gives up when the client does
            return _Answer("timeout", timeout_s, True)
        return _Answer("ok", latency, True, None, quota)


_SAMPLE_EVERY_S = 0.25
_DONE, _WAKE, _ARRIVE, _READY, _SAMPLE = range(5)


@dataclass(slots=True)
class _Pending:
    """A call on its way: who made it, and what the upstream will answer when."""

    item: int
    permit: _Report
    sent_at: float
    answer: _Answer


def simulate(scenario: Scenario, seed: int) -> Trace:
    """Run one scenario with one seed; deterministic."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible simulation, not secrecy
    now = 0.0
    clock = ManualClock()  # the limiter's time: the current event's
    client = scenario.client
    gate: _Gate
    limiter: AdaptiveLimiter | None = None
    if client.kind == "adaptive":
        limiter = AdaptiveLimiter(
            min_limit=client.min_limit,
            max_limit=client.max_limit,
            initial_limit=client.initial_limit,
            rate_max=client.rate_max,
            clock=clock,
        )
        gate = limiter
    else:
        gate = _FixedGate(client.concurrency)
    upstream = _UpstreamModel(scenario.upstream, rng)
    trace = Trace(scenario, seed)
    calls = trace.calls
    seq = itertools.count()
    # Events: (time, seq, kind, payload).
    events: list[tuple[float, int, int, _Pending | int | None]] = []
    push = heapq.heappush
    waiting: deque[int] = deque()  # work items (backlog workers / arrivals) waiting, FIFO
    next_wake = math.inf
    load = scenario.load
    arrival_rate = load.arrival_rate_per_s
    if arrival_rate is None:
        # A fixed client is its workers (the old way: one worker sleeping between calls).
        workers = load.workers if client.kind == "adaptive" else client.concurrency
        waiting.extend(range(workers))
    else:
        push(events, (rng.expovariate(arrival_rate), next(seq), _ARRIVE, None))
    push(events, (0.0, next(seq), _SAMPLE, None))
    push(events, (0.0, next(seq), _WAKE, None))

    while events:
        at, _, kind, payload = heapq.heappop(events)
        if at > scenario.duration_s:
            break
        now = at
        clock.now = at
        if kind == _DONE:
            call = cast(_Pending, payload)
            answer = call.answer
            if answer.occupies:
                upstream.serving -= 1
            calls.append(Call(call.sent_at, now, answer.outcome))
            if answer.outcome == "ok":
                call.permit.success(answer.after, answer.quota)
            else:
                before = limiter.state.decreases if limiter is not None else 0
                status = None if answer.outcome == "timeout" else int(answer.outcome)
                call.permit.dropped(answer.retry_after, status=status, quota=answer.quota)
                if answer.retry_after is not None:
                    trace.retry_after_windows.append((now, now + answer.retry_after))
                trace.drop_times.append(now)
                if limiter is not None and limiter.state.decreases > before:
                    trace.decrease_times.append(now)
            if arrival_rate is None:
                if client.pause_between_s > 0:
                    push(events, (now + client.pause_between_s, next(seq), _READY, call.item))
                else:
                    waiting.append(call.item)
        elif kind == _WAKE:
            if at >= next_wake:
                next_wake = math.inf
        elif kind == _READY:
            waiting.append(cast(int, payload))
        elif kind == _ARRIVE:
            waiting.append(0)
            assert arrival_rate is not None
            push(events, (now + rng.expovariate(arrival_rate), next(seq), _ARRIVE, None))
        else:  # _SAMPLE
            if limiter is not None:
                trace.limit_samples.append((now, limiter.state.limit))
            push(events, (now + _SAMPLE_EVERY_S, next(seq), _SAMPLE, None))
            continue
        # Start every call the gate allows now; if work is left, wake up when it may allow more.
        while waiting:
            permit = gate.try_acquire()
            if permit is None:
                break
            answer = upstream.call(now, client.timeout_s)
            pending = _Pending(waiting.popleft(), permit, now, answer)
            push(events, (now + answer.after, next(seq), _DONE, pending))
        if waiting:
            wake_at = gate.next_attempt_at()
            if wake_at is not None:
                wake_at = max(wake_at, now + 1e-6)
                if wake_at < next_wake or next_wake <= now:
                    next_wake = wake_at
                    push(events, (wake_at, next(seq), _WAKE, None))
    return trace
