"""Discrete-event simulator: the adaptive limiter against a scripted upstream, in virtual time.

The scenario is plain data (frozen dataclasses), so the same `Scenario` can later be replayed
against a real HTTP upstream, time-scaled, by a benchmark:

    Scenario
     ├── Upstream   phases over time: latency, token-bucket rate (429 + Retry-After beyond),
     │              concurrency cap (503 beyond), or an outage mode (fast 503s, black hole)
     ├── Load       a backlog (work always waiting) or Poisson arrivals
     └── Client     the adaptive limiter, or a fixed concurrency with a pause between calls

`simulate(scenario, seed)` drives the limiter's synchronous core (`try_acquire`,
`next_attempt_at`, the permit reports) with a virtual clock, and reports outcomes exactly
like the HTTP processor: 2xx -> success(latency), 429 -> dropped(retry_after),
503 / timeout -> dropped(None). Pure Python, no I/O, deterministic per seed.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from stream.limiter import AdaptiveLimiter

__all__ = [
    "Call",
    "Client",
    "Latency",
    "Load",
    "Phase",
    "Scenario",
    "Trace",
    "Upstream",
    "simulate",
]

Outcome = Literal["ok", "429", "503", "timeout"]
Mode = Literal["healthy", "fail_fast", "black_hole"]


# --------------------------------------------------------------------------- scenario data


@dataclass(frozen=True)
class Latency:
    """Service time of an accepted call: fixed, or lognormal around `median_s`, clipped."""

    median_s: float
    sigma: float = 0.0
    clip_s: float = math.inf

    def sample(self, rng: random.Random) -> float:
        if self.sigma <= 0:
            return self.median_s
        return min(self.clip_s, self.median_s * math.exp(rng.gauss(0.0, self.sigma)))

    @property
    def mean_s(self) -> float:
        """Mean of the unclipped distribution (clip only trims rare tails in our scenarios)."""
        return self.median_s * math.exp(self.sigma**2 / 2)


@dataclass(frozen=True)
class Phase:
    """How the upstream behaves from `at_s` until the next phase."""

    at_s: float
    latency: Latency
    rate_per_s: float = math.inf  # token bucket refill; an empty bucket answers 429
    burst_s: float = 1.0  # bucket size, in seconds of `rate_per_s`
    max_concurrency: int | None = None  # calls beyond it are answered 503 at once
    mode: Mode = "healthy"  # fail_fast: every call 503 at once; black_hole: no answer

    def capacity_per_s(self) -> float:
        """Sustainable goodput of this phase (calls/s)."""
        if self.mode != "healthy":
            return 0.0
        cap = self.rate_per_s
        if self.max_concurrency is not None:
            cap = min(cap, self.max_concurrency / self.latency.mean_s)
        return cap


@dataclass(frozen=True)
class Upstream:
    """A scripted upstream: phases sorted by start time, the first starting at 0."""

    phases: tuple[Phase, ...]
    retry_after_s: float = 1.0  # Retry-After sent with every 429
    reject_latency_s: float = 0.005  # how fast a 429 or a fail-fast 503 comes back

    def phase_at(self, t: float) -> Phase:
        starts = [p.at_s for p in self.phases]
        return self.phases[max(0, bisect.bisect_right(starts, t) - 1)]

    def capacity_at(self, t: float) -> float:
        return self.phase_at(t).capacity_per_s()


@dataclass(frozen=True)
class Load:
    """Offered load: a backlog (`arrival_rate_per_s` None) or Poisson arrivals."""

    arrival_rate_per_s: float | None = None
    workers: int = 512  # backlog: concurrent workers, each calling again when done


@dataclass(frozen=True)
class Client:
    """Who gates the calls: our adaptive limiter, or a fixed concurrency (the old ways)."""

    kind: Literal["adaptive", "fixed"] = "adaptive"
    concurrency: int = 4  # fixed only
    pause_between_s: float = 0.0  # each worker waits this long after its call (old way: 3 s)
    timeout_s: float = 10.0
    min_limit: int = 1
    max_limit: int = 256
    initial_limit: int = 4
    rate_max: float = 0.0


@dataclass(frozen=True)
class Scenario:
    name: str
    upstream: Upstream
    duration_s: float
    load: Load = field(default_factory=Load)
    client: Client = field(default_factory=Client)

    def with_client(self, client: Client, name: str | None = None) -> Scenario:
        return replace(self, client=client, name=name or self.name)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Call:
    sent_at: float
    done_at: float
    outcome: Outcome


@dataclass
class Trace:
    """Everything one run recorded, with the measures the tests assert on."""

    scenario: Scenario
    seed: int
    calls: list[Call] = field(default_factory=list)
    limit_samples: list[tuple[float, float]] = field(default_factory=list)  # (t, limit)
    decrease_times: list[float] = field(default_factory=list)
    drop_times: list[float] = field(default_factory=list)
    retry_after_windows: list[tuple[float, float]] = field(default_factory=list)

    def _sent_in(self, t0: float, t1: float) -> Iterator[Call]:
        return (c for c in self.calls if t0 <= c.sent_at < t1)

    def goodput(self, t0: float, t1: float) -> float:
        """Successful calls per second, counted by send time, in [t0, t1)."""
        return sum(1 for c in self._sent_in(t0, t1) if c.outcome == "ok") / (t1 - t0)

    def completions(self, t0: float, t1: float) -> float:
        """Successful calls per second, counted by completion time, in [t0, t1)."""
        return sum(1 for c in self.calls if c.outcome == "ok" and t0 <= c.done_at < t1) / (
            t1 - t0
        )

    def sent(self, t0: float, t1: float) -> int:
        return sum(1 for _ in self._sent_in(t0, t1))

    def share(self, outcome: Outcome, t0: float, t1: float) -> float:
        calls = list(self._sent_in(t0, t1))
        return sum(1 for c in calls if c.outcome == outcome) / max(1, len(calls))

    def mean_in_flight(self, t0: float, t1: float) -> float:
        busy = sum(
            max(0.0, min(c.done_at, t1) - max(c.sent_at, t0))
            for c in self.calls
            if c.sent_at < t1 and c.done_at > t0
        )
        return busy / (t1 - t0)

    def first_time(
        self, t0: float, t1: float, ok: Callable[[float], bool], step_s: float = 0.5
    ) -> float | None:
        """First t in [t0, t1) (on a `step_s` grid) for which `ok(t)`, else None."""
        t = t0
        while t < t1:
            if ok(t):
                return t
            t += step_s
        return None

    def settled_at(
        self, t0: float, t1: float, ok: Callable[[float], bool], window_s: float, step_s: float = 0.5
    ) -> float | None:
        """Seconds after `t0` from which every window [x, x + window_s) inside [t0, t1) is ok.

        None if even the last window fails: the run never settled.
        """
        last_bad: float | None = None
        x = t0
        while x + window_s <= t1 + 1e-9:
            if not ok(x):
                last_bad = x
            x += step_s
        if last_bad is None:
            return 0.0
        if last_bad + step_s + window_s > t1 + 1e-9:
            return None
        return last_bad + step_s - t0

    def limits(self, t0: float, t1: float) -> list[float]:
        return [v for t, v in self.limit_samples if t0 <= t < t1]

    def decreases(self, t0: float, t1: float) -> int:
        return sum(1 for t in self.decrease_times if t0 <= t < t1)

    def drops(self, t0: float, t1: float) -> int:
        return sum(1 for t in self.drop_times if t0 <= t < t1)

    def sends_during_retry_after(self) -> int:
        """Calls started while a Retry-After the client had already received was running."""
        sends = sorted(c.sent_at for c in self.calls)
        bad = 0
        for start, end in self.retry_after_windows:
            lo = bisect.bisect_right(sends, start)
            hi = bisect.bisect_left(sends, end - 1e-9)
            bad += max(0, hi - lo)
        return bad


# --------------------------------------------------------------------------- the simulation


class _Report(Protocol):
    def success(self, latency_s: float) -> None: ...
    def dropped(self, retry_after_s: float | None = None) -> None: ...


class _Gate(Protocol):
    def try_acquire(self) -> _Report | None: ...
    def next_attempt_at(self) -> float | None: ...


class _FixedPermit:
    def __init__(self, gate: _FixedGate) -> None:
        self._gate = gate

    def success(self, latency_s: float) -> None:
        self._gate.in_flight -= 1

    def dropped(self, retry_after_s: float | None = None) -> None:
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


class _UpstreamModel:
    """The upstream's state: its token bucket and the calls it is serving."""

    def __init__(self, upstream: Upstream, rng: random.Random) -> None:
        self.spec = upstream
        self.rng = rng
        self.phases = upstream.phases
        self.index = 0  # the current phase; virtual time only moves forward
        first = self.phases[0]
        self.tokens = first.rate_per_s * first.burst_s if math.isfinite(first.rate_per_s) else 0.0
        self.tokens_at = 0.0
        self.serving = 0

    def _advance(self, now: float) -> Phase:
        """Move to the phase of `now`, refilling the bucket piecewise across boundaries."""
        while self.index + 1 < len(self.phases) and self.phases[self.index + 1].at_s <= now:
            self._refill(self.phases[self.index + 1].at_s)
            self.index += 1
        self._refill(now)
        return self.phases[self.index]

    def _refill(self, now: float) -> None:
        phase = self.phases[self.index]
        if math.isfinite(phase.rate_per_s):
            size = phase.rate_per_s * phase.burst_s
            self.tokens = min(size, self.tokens + (now - self.tokens_at) * phase.rate_per_s)
        self.tokens_at = now

    def call(self, now: float, timeout_s: float) -> tuple[Outcome, float, bool]:
        """(outcome, seconds until the client sees it, whether it occupies a server slot)."""
        phase = self._advance(now)
        if phase.mode == "fail_fast":
            return "503", self.spec.reject_latency_s, False
        if phase.mode == "black_hole":
            return "timeout", timeout_s, False
        if phase.max_concurrency is not None and self.serving >= phase.max_concurrency:
            return "503", self.spec.reject_latency_s, False
        if math.isfinite(phase.rate_per_s):
            if self.tokens < 1.0:
                return "429", self.spec.reject_latency_s, False
            self.tokens -= 1.0
        latency = phase.latency.sample(self.rng)
        self.serving += 1
        if latency > timeout_s:  # the server gives up when the client does
            return "timeout", timeout_s, True
        return "ok", latency, True


_SAMPLE_EVERY_S = 0.25
_DONE, _WAKE, _ARRIVE, _READY, _SAMPLE = range(5)


def simulate(scenario: Scenario, seed: int) -> Trace:
    """Run one scenario with one seed; deterministic."""
    rng = random.Random(seed)
    now = 0.0
    client = scenario.client
    gate: _Gate
    limiter: AdaptiveLimiter | None = None
    if client.kind == "adaptive":
        limiter = AdaptiveLimiter(
            min_limit=client.min_limit,
            max_limit=client.max_limit,
            initial_limit=client.initial_limit,
            rate_max=client.rate_max,
            clock=lambda: now,
        )
        gate = limiter
    else:
        gate = _FixedGate(client.concurrency)
    upstream = _UpstreamModel(scenario.upstream, rng)
    retry_after = scenario.upstream.retry_after_s
    trace = Trace(scenario, seed)
    calls = trace.calls
    seq = itertools.count()
    # Events: (time, seq, kind, payload).
    events: list[tuple[float, int, int, object]] = []
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
        if kind == _DONE:
            item, permit, sent_at, outcome, after, occupies = payload  # type: ignore[misc]
            if occupies:
                upstream.serving -= 1
            calls.append(Call(sent_at, now, outcome))
            if outcome == "ok":
                permit.success(after)
            else:
                before = limiter.state.decreases if limiter is not None else 0
                if outcome == "429":
                    permit.dropped(retry_after)
                    trace.retry_after_windows.append((now, now + retry_after))
                else:
                    permit.dropped(None)
                trace.drop_times.append(now)
                if limiter is not None and limiter.state.decreases > before:
                    trace.decrease_times.append(now)
            if arrival_rate is None:
                if client.pause_between_s > 0:
                    push(events, (now + client.pause_between_s, next(seq), _READY, item))
                else:
                    waiting.append(item)
        elif kind == _WAKE:
            if at >= next_wake:
                next_wake = math.inf
        elif kind == _READY:
            waiting.append(payload)  # type: ignore[arg-type]
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
            item = waiting.popleft()
            outcome, after, occupies = upstream.call(now, client.timeout_s)
            push(events, (now + after, next(seq), _DONE, (item, permit, now, outcome, after, occupies)))
        if waiting:
            wake_at = gate.next_attempt_at()
            if wake_at is not None:
                wake_at = max(wake_at, now + 1e-6)
                if wake_at < next_wake or next_wake <= now:
                    next_wake = wake_at
                    push(events, (wake_at, next(seq), _WAKE, None))
    return trace


# --------------------------------------------------------------------------- the scenarios

FAST = Latency(0.050, sigma=0.5, clip_s=1.0)
"""A fast API: 50 ms median, natural lognormal spread (p99 ~160 ms)."""
SLOW = Latency(4.4, sigma=0.25, clip_s=8.8)
"""The real parse API: 4.4 s median, clipped below the 10 s client timeout."""
RATE = 200.0
CAP = 64
BURST_S = 0.5
"""The rate limiter holds half a second of calls: a 1 s Retry-After pause costs goodput."""


def _rate_limited(at_s: float, rate: float = RATE, mode: Mode = "healthy") -> Phase:
    return Phase(at_s, FAST, rate_per_s=rate, burst_s=BURST_S, mode=mode)


def _capped(at_s: float, latency: Latency = SLOW, mode: Mode = "healthy") -> Phase:
    return Phase(at_s, latency, max_concurrency=CAP, mode=mode)


S1_RATE_LIMIT = Scenario("S1 rate limit", Upstream((_rate_limited(0.0),)), duration_s=90.0)
S2_STEP = Scenario(
    "S2 capacity step",
    Upstream((_rate_limited(0.0), _rate_limited(30.0, RATE / 2), _rate_limited(75.0))),
    duration_s=115.0,
)
S3_LATENCY_SHIFT = Scenario(
    "S3 latency shift",
    Upstream((_capped(0.0, Latency(0.2)), _capped(15.0))),
    duration_s=195.0,
)
S4_OUTAGE = Scenario(
    "S4 outage",
    Upstream(
        (
            _rate_limited(0.0),
            _rate_limited(30.0, mode="fail_fast"),
            _rate_limited(60.0, mode="black_hole"),
            _rate_limited(90.0),
        )
    ),
    duration_s=130.0,
)
S4_OUTAGE_SLOW = Scenario(
    "S4 outage, slow upstream",
    Upstream(
        (
            _capped(0.0),
            _capped(60.0, mode="fail_fast"),
            _capped(90.0, mode="black_hole"),
            _capped(120.0),
        )
    ),
    duration_s=180.0,
)
S5_LIGHT_LOAD = Scenario(
    "S5 light load",
    Upstream((_rate_limited(0.0),)),
    duration_s=60.0,
    load=Load(arrival_rate_per_s=RATE / 2),
)
SLOW_BACKLOG = Scenario("slow upstream, backlog", Upstream((_capped(0.0),)), duration_s=300.0)
OLD_WAY = Client(kind="fixed", concurrency=1, pause_between_s=3.0)
FIXED_4 = Client(kind="fixed", concurrency=4)
