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

Below the engine: the scenarios S1-S5 and the baselines, the figures measured on each run
(`figures_*`), and `SUITE`, which pairs them for the tests (and a future benchmark).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal, Protocol, cast

from stream.processors.limiter import AdaptiveLimiter

__all__ = [
    "SUITE",
    "Call",
    "Client",
    "Figures",
    "Latency",
    "Load",
    "Phase",
    "Scenario",
    "Trace",
    "Upstream",
    "run_suite_job",
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
    """One upstream script, one offered load, one client, for `duration_s` seconds."""

    name: str
    upstream: Upstream
    duration_s: float
    load: Load = field(default_factory=Load)
    client: Client = field(default_factory=Client)

    def with_client(self, client: Client, name: str | None = None) -> Scenario:
        return replace(self, client=client, name=name or self.name)

    def scaled(self, speedup: float) -> Scenario:
        """The same script `speedup` times faster: every duration divided, every rate
        multiplied (for replaying against a real upstream in less wall time).

        The limiter's own time constants are not scaled, so its probing is relatively
        slower in a sped-up replay.
        """

        def phase(p: Phase) -> Phase:
            latency = replace(
                p.latency, median_s=p.latency.median_s / speedup, clip_s=p.latency.clip_s / speedup
            )
            return replace(
                p, at_s=p.at_s / speedup, latency=latency, rate_per_s=p.rate_per_s * speedup
            )

        upstream = Upstream(
            tuple(phase(p) for p in self.upstream.phases),
            retry_after_s=self.upstream.retry_after_s / speedup,
            reject_latency_s=self.upstream.reject_latency_s / speedup,
        )
        rate = self.load.arrival_rate_per_s
        return replace(
            self,
            upstream=upstream,
            duration_s=self.duration_s / speedup,
            load=replace(self.load, arrival_rate_per_s=None if rate is None else rate * speedup),
            client=replace(
                self.client,
                pause_between_s=self.client.pause_between_s / speedup,
                timeout_s=self.client.timeout_s / speedup,
                rate_max=self.client.rate_max * speedup,
            ),
        )


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Call:
    sent_at: float
    done_at: float
    outcome: Outcome


@dataclass
class Trace:
    """Everything one run recorded, and the measures the tests assert on.

    Rates are per second of virtual time over half-open windows [t0, t1). Calls are counted
    by the time they were *sent* unless a name says otherwise.
    """

    scenario: Scenario
    seed: int
    calls: list[Call] = field(default_factory=list)
    limit_samples: list[tuple[float, float]] = field(default_factory=list)  # (t, limit)
    decrease_times: list[float] = field(default_factory=list)
    drop_times: list[float] = field(default_factory=list)
    retry_after_windows: list[tuple[float, float]] = field(default_factory=list)

    @cached_property
    def _sent(self) -> dict[str, list[float]]:
        """Sorted send times per outcome, and of all calls under "all"."""
        by: dict[str, list[float]] = {"all": [], "ok": [], "429": [], "503": [], "timeout": []}
        for c in self.calls:
            by["all"].append(c.sent_at)
            by[c.outcome].append(c.sent_at)
        return {k: sorted(v) for k, v in by.items()}

    @cached_property
    def _ok_done(self) -> list[float]:
        return sorted(c.done_at for c in self.calls if c.outcome == "ok")

    @staticmethod
    def _count(times: list[float], t0: float, t1: float) -> int:
        return bisect.bisect_left(times, t1) - bisect.bisect_left(times, t0)

    def goodput(self, t0: float, t1: float) -> float:
        """Successful calls per second, by send time."""
        return self._count(self._sent["ok"], t0, t1) / (t1 - t0)

    def completions(self, t0: float, t1: float) -> float:
        """Successful calls per second, by completion time (throughput seen downstream)."""
        return self._count(self._ok_done, t0, t1) / (t1 - t0)

    def sent(self, t0: float, t1: float) -> int:
        """Calls sent, whatever their outcome."""
        return self._count(self._sent["all"], t0, t1)

    def share(self, outcome: Outcome, t0: float, t1: float) -> float:
        """Share of the calls sent that ended with `outcome`."""
        return self._count(self._sent[outcome], t0, t1) / max(1, self.sent(t0, t1))

    def mean_in_flight(self, t0: float, t1: float) -> float:
        """Time-averaged number of calls in flight."""
        busy = sum(
            max(0.0, min(c.done_at, t1) - max(c.sent_at, t0))
            for c in self.calls
            if c.sent_at < t1 and c.done_at > t0
        )
        return busy / (t1 - t0)

    def first_time(
        self, t0: float, t1: float, ok: Callable[[float], bool], step_s: float = 0.5
    ) -> float | None:
        """The first t in [t0, t1), on a `step_s` grid, for which `ok(t)`; else None."""
        t = t0
        while t < t1:
            if ok(t):
                return t
            t += step_s
        return None

    def limits(self, t0: float, t1: float) -> list[float]:
        """The limit, sampled every 0.25 s."""
        return [v for t, v in self.limit_samples if t0 <= t < t1]

    def decreases(self, t0: float, t1: float) -> int:
        return self._count(self.decrease_times, t0, t1)

    def drops(self, t0: float, t1: float) -> int:
        return self._count(self.drop_times, t0, t1)

    def sends_during_retry_after(self) -> int:
        """Calls started while a Retry-After that the client had received was running."""
        sends = self._sent["all"]
        return sum(
            max(0, bisect.bisect_left(sends, end) - bisect.bisect_right(sends, start))
            for start, end in self.retry_after_windows
        )


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


@dataclass(slots=True)
class _Pending:
    """A call on its way: who made it, and what the upstream will answer when."""

    item: int
    permit: _Report
    sent_at: float
    outcome: Outcome
    after: float
    occupies: bool


def simulate(scenario: Scenario, seed: int) -> Trace:
    """Run one scenario with one seed; deterministic."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible simulation, not secrecy
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
        if kind == _DONE:
            call = cast(_Pending, payload)
            if call.occupies:
                upstream.serving -= 1
            calls.append(Call(call.sent_at, now, call.outcome))
            if call.outcome == "ok":
                call.permit.success(call.after)
            else:
                before = limiter.state.decreases if limiter is not None else 0
                if call.outcome == "429":
                    call.permit.dropped(retry_after)
                    trace.retry_after_windows.append((now, now + retry_after))
                else:
                    call.permit.dropped(None)
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
            outcome, after, occupies = upstream.call(now, client.timeout_s)
            pending = _Pending(waiting.popleft(), permit, now, outcome, after, occupies)
            push(events, (now + after, next(seq), _DONE, pending))
        if waiting:
            wake_at = gate.next_attempt_at()
            if wake_at is not None:
                wake_at = max(wake_at, now + 1e-6)
                if wake_at < next_wake or next_wake <= now:
                    next_wake = wake_at
                    push(events, (wake_at, next(seq), _WAKE, None))
    return trace


# --------------------------------------------------------------------------- the scenarios
# Times are virtual seconds; a benchmark replaying these against a real upstream divides
# them (and the latencies) by its time scale.

FAST = Latency(0.050, sigma=0.5, clip_s=1.0)
"""A fast API: 50 ms median with a natural lognormal spread (p99 about 160 ms)."""
SLOW = Latency(4.4, sigma=0.25, clip_s=8.8)
"""The real parse API: 4.4 s median, spread clipped below the 10 s client timeout."""
RATE = 200.0
"""S1/S2/S4/S5: the upstream's rate limit, calls per second."""
BURST_S = 0.5
"""Its token bucket holds half a second of calls, so a 1 s Retry-After pause costs goodput."""
CAP = 64
"""S3 and the baselines: the upstream's concurrency cap (503 beyond it)."""


def rate_limited(at_s: float, rate: float = RATE, mode: Mode = "healthy") -> Phase:
    return Phase(at_s, FAST, rate_per_s=rate, burst_s=BURST_S, mode=mode)


def capped(at_s: float, latency: Latency = SLOW, mode: Mode = "healthy") -> Phase:
    return Phase(at_s, latency, max_concurrency=CAP, mode=mode)


S1_RATE_LIMIT = Scenario("S1 rate limit", Upstream((rate_limited(0.0),)), duration_s=75.0)
S2_STEP = Scenario(
    "S2 capacity step R -> R/2 -> R",
    Upstream((rate_limited(0.0), rate_limited(30.0, RATE / 2), rate_limited(75.0))),
    duration_s=115.0,
)
S3_LATENCY_SHIFT = Scenario(
    "S3 latency 0.2 s -> 4.4 s, cap 64",
    Upstream((capped(0.0, Latency(0.2)), capped(10.0))),
    duration_s=190.0,
)
S4_OUTAGE = Scenario(
    "S4 outage, fast upstream",
    Upstream(
        (
            rate_limited(0.0),
            rate_limited(30.0, mode="fail_fast"),
            rate_limited(60.0, mode="black_hole"),
            rate_limited(90.0),
        )
    ),
    duration_s=130.0,
)
S4_OUTAGE_SLOW = Scenario(
    "S4 outage, slow upstream",
    Upstream(
        (
            capped(0.0),
            capped(60.0, mode="fail_fast"),
            capped(90.0, mode="black_hole"),
            capped(120.0),
        )
    ),
    duration_s=180.0,
)
S5_LIGHT_LOAD = Scenario(
    "S5 light load (Poisson, 50 %)",
    Upstream((rate_limited(0.0),)),
    duration_s=40.0,
    load=Load(arrival_rate_per_s=RATE / 2),
)
SLOW_BACKLOG = Scenario("slow upstream, backlog", Upstream((capped(0.0),)), duration_s=300.0)
"""The baseline comparison: the real API's latency and a concurrency cap of 64."""
OLD_WAY = Client(kind="fixed", concurrency=1, pause_between_s=3.0)
"""Before the limiter: one call at a time, sleeping 3 s between calls."""
FIXED_4 = Client(kind="fixed", concurrency=4)
"""A fixed concurrency of 4 (the limiter's initial limit, never adapted)."""


# --------------------------------------------------------------------------- figures
# What the tests assert on (and a benchmark replaying the scenarios would report): plain
# numbers per run, so runs can be measured in worker processes and compared across seeds.

Figures = dict[str, float]

SLOW_CAPACITY = CAP / 4.4  # the brief's figure: 64 calls in flight at the 4.4 s median
NEVER = math.inf


def _phase(scenario: Scenario, index: int) -> float:
    return scenario.upstream.phases[index].at_s


def _first(trace: Trace, t0: float, t1: float, ok: Callable[[float], bool]) -> float:
    """Seconds after t0 until `ok` first holds (0.5 s grid), or NEVER."""
    at = trace.first_time(t0, t1, ok)
    return NEVER if at is None else at - t0


def figures_s1(t: Trace) -> Figures:
    """Steady state after a 15 s warm-up, and how soon 0.9 R is first reached."""
    end = t.scenario.duration_s
    return {
        "goodput/R": t.goodput(15, end) / RATE,
        "429 share": t.share("429", 15, end),
        "sent in pause": t.sends_during_retry_after(),
        "first 0.9R s": _first(t, 0, 30, lambda x: t.goodput(x, x + 1) >= 0.9 * RATE),
        "decreases/min": t.decreases(15, end) / (end - 15) * 60,
    }


def figures_s2(t: Trace) -> Figures:
    """Convergence after the drop, goodput from 15 s after it, time to find the rise."""
    drop, rise, end = _phase(t.scenario, 1), _phase(t.scenario, 2), t.scenario.duration_s
    half = RATE / 2
    fair = half * FAST.mean_s  # the concurrency that sends exactly R/2 (Little's law)

    def converged(x: float) -> bool:
        return all(0.85 * fair <= v <= 1.15 * fair for v in t.limits(x, x + 0.5))

    reached = _first(t, rise, end, lambda x: t.goodput(x, x + 5) >= 0.9 * RATE)
    return {
        "drop: limit +-15 % s": _first(t, drop, rise, converged),
        "drop: goodput/cap": t.goodput(drop + 15, rise) / half,
        "drop: 429 share": t.share("429", drop + 15, rise),
        "rise: 0.9R s": reached,
        "rise: goodput/R next 10 s": t.goodput(rise + reached, rise + reached + 10) / RATE,
        "rise: goodput/R +30 s..": t.goodput(rise + 30, end) / RATE,
        "sent in pause": t.sends_during_retry_after(),
    }


def figures_s3(t: Trace) -> Figures:
    """Throughput and concurrency from 60 s after the shift; decreases never without drops."""
    shift, end = _phase(t.scenario, 1), t.scenario.duration_s
    at_shift = t.limits(shift - 0.25, shift + 0.25)[0]
    quiet = [(x, x + 10) for x in range(int(shift), int(end) - 9, 10)]
    return {
        # From 1 s after the shift: the last 0.2 s calls have finished by then.
        "0.9 cap s": 1
        + _first(t, shift + 1, end, lambda x: t.completions(x, x + 10) >= 0.9 * SLOW_CAPACITY),
        "throughput/cap": t.completions(shift + 60, end) / SLOW_CAPACITY,
        "mean in flight": t.mean_in_flight(shift + 60, end),
        "drops 30 s after shift": t.drops(shift, shift + 30),
        "limit kept": min(t.limits(shift, shift + 30)) / at_shift,
        "decreases w/o drop": len(set(t.decrease_times) - set(t.drop_times)),
        "quiet windows w/ decrease": sum(
            1 for a, b in quiet if t.drops(a, b) == 0 and t.decreases(a, b) > 0
        ),
    }


def _outage_figures(t: Trace, capacity: float, in_flight_cap: float | None) -> Figures:
    """Calls during the outage against the pre-outage rate; recovery; the limit after it."""
    down, up, end = _phase(t.scenario, 1), _phase(t.scenario, 3), t.scenario.duration_s
    before = t.completions(down - 15, down)

    def recovered(x: float) -> bool:
        if in_flight_cap is not None:  # slow upstream: successes arrive 4.4 s after sending
            return t.mean_in_flight(x, x + 2) >= 0.9 * in_flight_cap
        return t.goodput(x, x + 5) >= 0.9 * capacity

    limit_before = statistics.fmean(t.limits(down - 15, down))
    return {
        "calls in outage": t.sent(down, up),
        "outage calls/60 s pre": t.sent(down, up) / (before * (up - down)),
        "recovery s": _first(t, up, end, recovered),
        "limit after/before": statistics.fmean(t.limits(up + 30, end)) / limit_before,
        "min limit after": min(t.limits(up + 30, end)),
    }


def figures_s4(t: Trace) -> Figures:
    return _outage_figures(t, RATE, None)


def figures_s4_slow(t: Trace) -> Figures:
    return _outage_figures(t, SLOW_CAPACITY, CAP)


def figures_s5(t: Trace) -> Figures:
    """Light load: nothing to decrease for, and all offered work served."""
    offered = t.scenario.load.arrival_rate_per_s or 0.0
    end = t.scenario.duration_s
    return {
        "decreases": t.decreases(0, end),
        "drops": t.drops(0, end),
        "goodput/offered": t.goodput(5, end - 1) / offered,
    }


OLD_WAY_S = 3000.0  # the baselines make few calls: a long run keeps their rate exact


def figures_ours(t: Trace) -> Figures:
    """Throughput over the whole run (slow start included) and after 60 s."""
    end = t.scenario.duration_s
    reach = t.first_time(0, end, lambda x: max(t.limits(x, x + 0.5)) >= 0.9 * CAP)
    return {
        "calls/s": t.completions(0, end),
        "calls/s after 60 s": t.completions(60, end),
        "0.9 cap limit s": NEVER if reach is None else reach,
    }


def figures_baseline(t: Trace) -> Figures:
    return {"calls/s": t.completions(0, t.scenario.duration_s)}


SUITE: dict[str, tuple[Scenario, Callable[[Trace], Figures]]] = {
    "S1": (S1_RATE_LIMIT, figures_s1),
    "S2": (S2_STEP, figures_s2),
    "S3": (S3_LATENCY_SHIFT, figures_s3),
    "S4": (S4_OUTAGE, figures_s4),
    "S4 slow": (S4_OUTAGE_SLOW, figures_s4_slow),
    "S5": (S5_LIGHT_LOAD, figures_s5),
    "ours": (SLOW_BACKLOG, figures_ours),
    "old way": (
        replace(SLOW_BACKLOG.with_client(OLD_WAY), duration_s=OLD_WAY_S),
        figures_baseline,
    ),
    "fixed 4": (
        replace(SLOW_BACKLOG.with_client(FIXED_4), duration_s=OLD_WAY_S),
        figures_baseline,
    ),
}


def run_suite_job(job: tuple[str, int]) -> tuple[str, int, Figures]:
    """Simulate one (suite entry, seed) and measure it; a picklable unit of work."""
    name, seed = job
    scenario, measure = SUITE[name]
    return name, seed, measure(simulate(scenario, seed))
