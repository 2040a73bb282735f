"""The limiter scenarios of `stream/devkit/limiter_sim/` (S1-S5, the baselines, the
rate-limit shapes), over real HTTP.

The simulator checks the limiter's algorithm in virtual time; this replays the same scripts
against `stream upstream` in a child process (so the server has its own CPU and event loop)
and drives it with a real `HttpProcessor`, to see what the sockets, the server's timing and
httpx add. `python -m bench.limiter_scenarios [--smoke] [--only S1,S3]` prints a markdown
table: S1-S5 and the baselines take about 8 minutes, the rate-limit shapes
(keys "shape ...", each 45 s, minute windows 130 s) about 15 more; `--smoke` runs S1, S3,
the baselines and one shape in about 45 s. No Kafka or MongoDB is needed.

How a scenario runs:

- The upstream follows the scenario's phases: the bench POSTs each phase's behaviour to
  `/control` when the phase starts. The reference upstream has no "fail fast" mode, so a
  fail-fast phase stops it with SIGTERM: it refuses new connections at once (the processor
  reports a drop without Retry-After, as for a 503) and lets the requests in progress
  finish within its 1 s grace, as the simulator's fail-fast upstream serves the calls it
  had accepted. The next phase starts it again on the same port.
- Load: a backlog (BATCHES concurrent `process_many` calls of BATCH_SIZE SMS, so the
  limiter, not the feeder, decides how many calls are in flight) or paced Poisson arrivals
  of one SMS each. Baseline clients (one call at a time with a pause, or a fixed
  concurrency) run at the same time, each against its own upstream with the same script.
- Measured on the client side: every SAMPLE_S the limiter's state and the processor's
  `stream_api_responses_total` counters. Calls started = finished + in flight, so "sent in
  pause" counts calls started within sampling intervals that a Retry-After pause covered.

Time scaling: scripts with a rate limit run at speedup 1, because the upstream's
Retry-After is whole seconds (at least 1 s, as in the simulator); S2 and S4 have shorter
phases than in the simulator instead. The slow-upstream scripts (4.4 s latency) run 4 times
faster, S3 twice (see PLANS); the limiter's own time constants (growth per second, outage
backoff, calm time) are not scaled, so there it adapts relatively slower than in the
simulator, which can cost some of the convergence figures.
Figures are in scenario time (real seconds times the speedup), named and bounded as in
`tests/test_limiter.py`, so each can be read against its simulated value. The harness
column (CPU, event-loop lag, share of samples with no SMS waiting for a permit) says
whether the client kept up.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import logging
import math
import operator
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson

from bench import performance
from bench.harness import machine
from stream.config import Settings
from stream.devkit import limiter_sim as sim
from stream.devkit.stack.process import free_port
from stream.devkit.upstream import PARSE_PATH, UpstreamBehaviour
from stream.observability.metrics import API_RESPONSES
from stream.processors.http import RETRY_BUDGET_S, HttpProcessor
from stream.processors.limiter import AdaptiveLimiter
from stream.sms.codec import decode_sms
from stream.sms.models import Sms
from stream.tools.synthetic import synthetic_sms

__all__ = ["PLANS", "Figure", "Plan", "main", "markdown", "run"]

logger = logging.getLogger(__name__)

SAMPLE_S = 0.1
"""Real seconds between samples of the limiter: 10 samples per 1 s goodput window, and
negligible CPU (a state snapshot and one counter read)."""
BATCH_SIZE = 50
BATCHES = 12
"""Backlog load: 600 SMS handed to the processor at any time, twice the limiter's maximum,
so SMS are always waiting for a permit even while a batch waits for its slowest call."""
SMS_POOL = 1000
"""Distinct synthetic SMS, generated before the clock starts and reused in turn."""
UPSTREAM_SEED = 7
"""The same latency draws (and Poisson arrivals) in every run, for ours and the baselines."""
BASELINE_WORKERS = 8
"""Each baseline runs as independent copies with this many workers in all (well under the
upstream's cap of 64): one old-way client makes ~40 calls in a run, and the latency draws
alone would move its rate by +-5 %."""
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
LOG_TAIL_CHARS = 2000
WARMUP_S = 15.0
"""S1's figures start after this warm-up (scenario seconds), as in the simulator."""

Column = Literal["goodput", "rejection", "convergence", "other"]
COLUMNS: dict[Column, str] = {
    "goodput": "goodput/capacity",
    "rejection": "rejection share",
    "convergence": "convergence (scenario s)",
    "other": "other",
}
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Figure:
    """One measured figure, its bar from tests/test_limiter.py (if any) and its column."""

    name: str
    value: float
    bar: tuple[str, float] | None
    column: Column

    @property
    def met(self) -> bool | None:
        if self.bar is None:
            return None
        op, threshold = self.bar
        return not math.isnan(self.value) and _OPS[op](self.value, threshold)


# ----------------------------------------------------------------------------- the trace


@dataclass(frozen=True, slots=True)
class _Sample:
    t: float  # scenario seconds since the start
    limit: float
    in_flight: int
    paused_until: float | None  # scenario seconds; None when not paused
    drops: int
    decreases: int
    ok: float  # 2xx answers since the start
    rejected: float  # 429 answers since the start
    refused: float  # 429 and 5xx answers since the start (a bare 503 is a refusal too)
    done: float  # calls finished since the start, whatever the outcome
    waiting: int  # SMS handed to the processor and not holding a permit
    lag: float  # real seconds this sample came late: event-loop lag

    @property
    def started(self) -> float:
        return self.done + self.in_flight


_Counter = Literal["ok", "rejected", "refused", "done", "started", "drops", "decreases"]


class _Trace:
    """The samples of one run, and the measures of `limiter_sim.Trace` on them.

    Counts over [t0, t1) are differences of the samples at or before t0 and t1; rates are
    per scenario second; answers are counted when they arrive.
    """

    def __init__(self, samples: list[_Sample]) -> None:
        self.samples = samples
        self._times = [s.t for s in samples]
        self.end = samples[-1].t

    def at(self, t: float) -> _Sample:
        return self.samples[max(0, bisect.bisect_right(self._times, t) - 1)]

    def count(self, counter: _Counter, t0: float, t1: float) -> float:
        value: float = getattr(self.at(t1), counter) - getattr(self.at(t0), counter)
        return value

    def rate(self, counter: _Counter, t0: float, t1: float) -> float:
        return self.count(counter, t0, t1) / (t1 - t0) if t1 > t0 else math.nan

    def share(self, counter: _Counter, t0: float, t1: float) -> float:
        return self.count(counter, t0, t1) / max(1.0, self.count("done", t0, t1))

    def window(self, t0: float, t1: float) -> list[_Sample]:
        return self.samples[
            bisect.bisect_left(self._times, t0) : bisect.bisect_left(self._times, t1)
        ]

    def limits(self, t0: float, t1: float) -> list[float]:
        return [s.limit for s in self.window(t0, t1)]

    def mean_in_flight(self, t0: float, t1: float) -> float:
        window = self.window(t0, t1)
        return statistics.fmean(s.in_flight for s in window) if window else math.nan

    def round_trip(self, t0: float, t1: float) -> float:
        """Mean seconds a call holds its permit (Little's law: in flight / completion rate)."""
        return self.mean_in_flight(t0, t1) / self.rate("done", t0, t1)

    def first(self, t0: float, t1: float, ok: Callable[[float], bool], step: float = 0.5) -> float:
        """Seconds after t0 until `ok(t)` first holds on a `step` grid; inf if never."""
        t = t0
        while t < t1:
            if ok(t):
                return t - t0
            t += step
        return math.inf

    def sent_in_pause(self) -> float:
        """Calls started in sampling intervals that a Retry-After pause covered entirely."""
        return sum(
            b.started - a.started
            for a, b in itertools.pairwise(self.samples)
            if a.paused_until is not None and a.paused_until >= b.t
        )


def _answers() -> dict[str, float]:
    """The processor's answers so far, by status class (one process-wide counter)."""
    return {
        sample.labels["status_class"]: sample.value
        for metric in API_RESPONSES.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


@dataclass
class _Load:
    outstanding: int = 0  # SMS inside process_many right now


async def _sample(
    limiter: AdaptiveLimiter, load: _Load, t0: float, speedup: float, seconds: float
) -> _Trace:
    """Sample every SAMPLE_S until `seconds` (real) after t0."""
    base = _answers()
    samples: list[_Sample] = []
    due, end = t0, t0 + seconds
    while True:
        now = time.monotonic()
        state, answers = limiter.state, _answers()
        gained = {k: v - base.get(k, 0.0) for k, v in answers.items()}
        paused = state.paused_until
        samples.append(
            _Sample(
                t=(now - t0) * speedup,
                limit=state.limit,
                in_flight=state.in_flight,
                paused_until=None if paused is None else (paused - t0) * speedup,
                drops=state.drops,
                decreases=state.decreases,
                ok=gained.get("2xx", 0.0),
                rejected=gained.get("429", 0.0),
                refused=gained.get("429", 0.0) + gained.get("5xx", 0.0),
                done=sum(gained.values()),
                waiting=load.outstanding - state.in_flight,
                lag=max(0.0, now - due),
            )
        )
        if now >= end:
            return _Trace(samples)
        due = min(due + SAMPLE_S, end)
        await asyncio.sleep(due - time.monotonic())


# ----------------------------------------------------------------------------- the upstream


def _behaviour(
    phase: sim.Phase, retry_after_s: float, quota_format: str = "x"
) -> dict[str, object]:
    """A simulator phase as `/control` fields (every field, so phases do not accumulate);
    a phase with quota headers tells them in `quota_format`."""
    if math.isfinite(phase.rate_per_s) and retry_after_s != 1.0:
        raise ValueError("the upstream's Retry-After is 1 s: a rate limit cannot be time-scaled")
    latency = phase.latency
    lognormal = latency.sigma > 0
    rate = phase.rate_per_s if math.isfinite(phase.rate_per_s) else 0.0
    return {
        "latency": 0.0 if lognormal else latency.median_s,
        "latency_median": latency.median_s if lognormal else 0.0,
        "latency_sigma": latency.sigma,
        "latency_max": (
            latency.clip_s if math.isfinite(latency.clip_s) else UpstreamBehaviour.latency_max
        ),
        "rate": rate,
        "burst": rate * phase.burst_s,
        "max_concurrency": phase.max_concurrency or 0,
        "black_hole": phase.mode == "black_hole",
        "window": phase.window_s,
        "refuse_503": phase.refuse_503,
        "quota_headers": quota_format if phase.quota_headers else "",
    }


class _Upstream:
    """`stream upstream` in a child process, on one port for its whole life, so a fail-fast
    phase can stop it and the next phase start it again behind the same URL."""

    def __init__(
        self, http: httpx.AsyncClient, log_dir: Path, label: str, quota_format: str = "x"
    ) -> None:
        self.quota_format = quota_format
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{PARSE_PATH}"
        self._http = http
        self._log = log_dir / f"upstream-{label.replace('/', '-').replace(' ', '-')}.log"
        self._proc: asyncio.subprocess.Process | None = None
        self._cpu_before = 0.0  # CPU seconds of the processes stopped so far

    async def apply(self, phase: sim.Phase, retry_after_s: float) -> None:
        """Behave as `phase` says from now on: stopped for fail_fast, else (re)started."""
        if phase.mode == "fail_fast":
            await self.stop()
            return
        if self._proc is None:
            await self._spawn()
        response = await self._http.post(
            f"http://127.0.0.1:{self.port}/control",
            json=_behaviour(phase, retry_after_s, self.quota_format),
        )
        response.raise_for_status()

    async def _spawn(self) -> None:
        argv = [sys.executable, "-m", "stream", "upstream", "--port", str(self.port)]
        argv += ["--seed", str(UPSTREAM_SEED), "--log-level", "WARNING"]
        with self._log.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                raise RuntimeError(f"upstream exited with {self._proc.returncode}{self._tail()}")
            try:
                (await self._http.get(f"http://127.0.0.1:{self.port}/stats")).raise_for_status()
            except httpx.HTTPError:
                await asyncio.sleep(0.02)
            else:
                return
        raise RuntimeError(f"upstream not answering after {READY_TIMEOUT_S:.0f} s{self._tail()}")

    def _tail(self) -> str:
        return f"\n--- {self._log} ---\n{self._log.read_text(errors='replace')[-LOG_TAIL_CHARS:]}"

    def cpu_s(self) -> float:
        """CPU seconds used by all the processes so far; RuntimeError if one has died."""
        if self._proc is None:
            return self._cpu_before
        if self._proc.returncode is not None:
            raise RuntimeError(f"upstream exited with {self._proc.returncode}{self._tail()}")
        fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return self._cpu_before + ticks / os.sysconf("SC_CLK_TCK")

    async def stop(self) -> None:
        """SIGTERM (new connections refused, requests in progress finish), SIGKILL after
        STOP_TIMEOUT_S; the CPU used while draining is not counted."""
        proc = self._proc
        if proc is None:
            return
        self._cpu_before = self.cpu_s()
        self._proc = None
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _drive(upstream: _Upstream, script: sim.Upstream, t0: float) -> None:
    """Apply each phase after the first at its (real) start time."""
    for phase in script.phases[1:]:
        await asyncio.sleep(t0 + phase.at_s - time.monotonic())
        await upstream.apply(phase, script.retry_after_s)


# ----------------------------------------------------------------------------- the clients


async def _backlog(processor: HttpProcessor, pool: Sequence[Sms], load: _Load) -> None:
    """BATCHES batches in flight at all times, each followed at once by the next."""

    async def batches(offset: int) -> None:
        for start in itertools.count(offset, BATCH_SIZE * BATCHES):
            batch = [pool[(start + k) % len(pool)] for k in range(BATCH_SIZE)]
            load.outstanding += len(batch)
            try:
                await processor.process_many(batch)
            finally:
                load.outstanding -= len(batch)

    await asyncio.gather(*(batches(n * BATCH_SIZE) for n in range(BATCHES)))


async def _arrivals(
    processor: HttpProcessor, pool: Sequence[Sms], load: _Load, rate: float
) -> None:
    """One SMS per Poisson arrival at `rate` per real second, each processed on its own."""
    rng = random.Random(UPSTREAM_SEED)
    running: set[asyncio.Task[None]] = set()

    async def one(sms: Sms) -> None:
        load.outstanding += 1
        try:
            await processor.process_many([sms])
        finally:
            load.outstanding -= 1

    due = time.monotonic()
    try:
        for i in itertools.count():
            due += rng.expovariate(rate)
            await asyncio.sleep(due - time.monotonic())
            task = asyncio.create_task(one(pool[i % len(pool)]))
            running.add(task)
            task.add_done_callback(running.discard)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def _adaptive(
    scenario: sim.Scenario, speedup: float, upstream: _Upstream, pool: Sequence[Sms]
) -> _Trace:
    """Our HttpProcessor against `upstream` for the (real-time) `scenario`."""
    client = scenario.client
    settings = Settings(
        processor="http",
        api_url=upstream.url,
        api_timeout_s=client.timeout_s,
        limit_min=client.min_limit,
        limit_max=client.max_limit,
        limit_initial=client.initial_limit,
    )
    load = _Load()
    async with HttpProcessor(settings, retry_budget_s=RETRY_BUDGET_S / speedup) as processor:
        rate = scenario.load.arrival_rate_per_s
        t0 = time.monotonic()
        background = [
            asyncio.create_task(_drive(upstream, scenario.upstream, t0)),
            asyncio.create_task(
                _backlog(processor, pool, load)
                if rate is None
                else _arrivals(processor, pool, load, rate)
            ),
        ]
        try:
            trace = await _sample(processor.limiter, load, t0, speedup, scenario.duration_s)
        finally:
            for task in background:
                task.cancel()
            outcomes = await asyncio.gather(*background, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome
    return trace


async def _fixed(client: sim.Client, url: str, bodies: Sequence[bytes], seconds: float) -> float:
    """The old ways: `concurrency` workers, each one call at a time and a pause after it;
    the 2xx answers within `seconds` of one client, averaged over enough copies to make
    BASELINE_WORKERS workers."""
    ok = 0
    copies = math.ceil(BASELINE_WORKERS / client.concurrency)
    workers = client.concurrency * copies
    limits = httpx.Limits(max_connections=workers)

    async def worker(http: httpx.AsyncClient, offset: int) -> None:
        nonlocal ok
        for i in itertools.count(offset, workers):
            try:
                response = await http.post(url, content=bodies[i % len(bodies)])
                ok += response.is_success
            except httpx.HTTPError:
                pass  # a failed call is simply not a success, as for the old code
            await asyncio.sleep(client.pause_between_s)

    async with httpx.AsyncClient(
        timeout=client.timeout_s,
        limits=limits,
        headers={"content-type": "application/json"},
        trust_env=False,
    ) as http:
        tasks = [asyncio.create_task(worker(http, n)) for n in range(workers)]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return ok / copies


# ----------------------------------------------------------------------------- the figures


@dataclass(frozen=True)
class _Measured:
    scenario: sim.Scenario  # in scenario time, as the simulator knows it
    trace: _Trace
    baseline_ok: list[float]  # 2xx answers of one client of each baseline over the run


def _at(scenario: sim.Scenario, index: int) -> float:
    return scenario.upstream.phases[index].at_s


def _s1(m: _Measured) -> list[Figure]:
    t, rate = m.trace, sim.RATE
    warm = min(WARMUP_S, t.end / 2)
    return [
        Figure("goodput/R", t.rate("ok", warm, t.end) / rate, (">=", 0.90), "goodput"),
        Figure("429 share", t.share("rejected", warm, t.end), ("<=", 0.02), "rejection"),
        Figure(
            "first 0.9R s",
            t.first(0, min(30, t.end), lambda x: t.rate("ok", x, x + 1) >= 0.9 * rate),
            ("<=", 30),
            "convergence",
        ),
        Figure("sent in pause", t.sent_in_pause(), ("==", 0), "other"),
        Figure("decreases/min", t.rate("decreases", warm, t.end) * 60, None, "other"),
    ]


def _s2(m: _Measured) -> list[Figure]:
    t, rate = m.trace, sim.RATE
    drop, rise = _at(m.scenario, 1), _at(m.scenario, 2)
    half = rate / 2
    # The concurrency that sends exactly R/2 (Little's law), with the round trip measured:
    # the simulator's is the latency model alone, real HTTP adds a few milliseconds.
    rtt = t.round_trip(drop, rise)
    fair = half * rtt

    def converged(x: float) -> bool:
        return all(0.85 * fair <= v <= 1.15 * fair for v in t.limits(x, x + 0.5))

    reached = t.first(rise, t.end, lambda x: t.rate("ok", x, x + 5) >= 0.9 * rate)
    return [
        Figure("drop: goodput/cap", t.rate("ok", drop + 15, rise) / half, (">=", 0.90), "goodput"),
        Figure("drop: 429 share", t.share("rejected", drop + 15, rise), ("<=", 0.02), "rejection"),
        Figure("rise: 0.9R s", reached, ("<=", 30), "convergence"),
        Figure("drop: limit +-15 % s", t.first(drop, rise, converged), ("<=", 15), "other"),
        Figure("round trip ms", 1000 * rtt, None, "other"),
        Figure(
            "rise: goodput/R next 10 s",
            t.rate("ok", rise + reached, rise + reached + 10) / rate,
            (">=", 0.85),
            "other",
        ),
        Figure(
            "rise: goodput/R +30 s..", t.rate("ok", rise + 30, t.end) / rate, (">=", 0.80), "other"
        ),
        Figure("sent in pause", t.sent_in_pause(), ("==", 0), "other"),
    ]


def _s3(m: _Measured) -> list[Figure]:
    t, cap = m.trace, sim.SLOW_CAPACITY
    shift = _at(m.scenario, 1)
    steady = min(shift + 60, (shift + t.end) / 2)
    after = min(shift + 30, t.end)
    drops_after = t.count("drops", shift, after)
    quiet = [(float(a), a + 10.0) for a in range(int(shift), int(t.end) - 9, 10)]
    reach = t.first(shift + 1, t.end, lambda x: t.rate("ok", x, x + 10) >= 0.9 * cap)
    return [
        Figure("throughput/cap", t.rate("ok", steady, t.end) / cap, (">=", 0.90), "goodput"),
        Figure("drop share", 1 - t.share("ok", steady, t.end), None, "rejection"),
        Figure("0.9 cap s", 1 + reach, ("<=", 60), "convergence"),
        Figure("mean in flight", t.mean_in_flight(steady, t.end), (">=", 58), "other"),
        Figure("drops 30 s after shift", drops_after, None, "other"),
        Figure(
            "limit kept",
            min(t.limits(shift, after)) / t.at(shift).limit,
            (">=", 1.0) if drops_after == 0 else None,  # only a drop may lower it
            "other",
        ),
        Figure("drops after shift", t.count("drops", shift, t.end), None, "other"),
        Figure("decreases after shift", t.count("decreases", shift, t.end), None, "other"),
        Figure(
            "quiet windows w/ decrease",
            sum(1 for a, b in quiet if t.count("drops", a, b) == 0 < t.count("decreases", a, b)),
            ("==", 0),
            "other",
        ),
    ]


def _outage(m: _Measured, slow: bool) -> list[Figure]:
    t = m.trace
    down, up = _at(m.scenario, 1), _at(m.scenario, 3)
    capacity = sim.SLOW_CAPACITY if slow else sim.RATE
    before = t.rate("ok", down - 15, down)
    sent = t.count("started", down, up)

    def recovered(x: float) -> bool:
        if slow:  # successes arrive 4.4 s after sending: watch the calls in flight instead
            return t.mean_in_flight(x, x + 2) >= 0.9 * sim.CAP
        return t.rate("ok", x, x + 5) >= 0.9 * capacity

    limit_after = t.limits(up + 30, t.end)
    return [
        Figure("goodput/cap +30 s..", t.rate("ok", up + 30, t.end) / capacity, None, "goodput"),
        Figure(
            "outage calls/pre-outage rate", sent / (before * (up - down)), ("<=", 0.05), "rejection"
        ),
        Figure("recovery s", t.first(up, t.end, recovered), ("<=", 30), "convergence"),
        Figure("calls in outage", sent, None, "other"),
        Figure(
            "limit after/before",
            statistics.fmean(limit_after) / statistics.fmean(t.limits(down - 15, down)),
            (">=", 0.8),
            "other",
        ),
        Figure("min limit after", min(limit_after), (">", 1), "other"),
    ]


def _s5(m: _Measured) -> list[Figure]:
    t = m.trace
    offered = m.scenario.load.arrival_rate_per_s or math.nan
    return [
        Figure("goodput/offered", t.rate("ok", 5, t.end - 1) / offered, (">=", 0.95), "goodput"),
        Figure("drops", t.count("drops", 0, t.end), ("==", 0), "rejection"),
        Figure("decreases", t.count("decreases", 0, t.end), ("==", 0), "other"),
    ]


def _baselines(m: _Measured) -> list[Figure]:
    t = m.trace
    old, fixed = (ok / t.end for ok in m.baseline_ok)
    ours = t.rate("ok", 0, t.end)
    after = t.rate("ok", min(60, t.end / 2), t.end)
    reach = t.first(0, t.end, lambda x: max(t.limits(x, x + 0.5), default=0) >= 0.9 * sim.CAP)
    return [
        Figure("ours after 60 s/cap", after / sim.SLOW_CAPACITY, None, "goodput"),
        Figure("ours drop share", 1 - t.share("ok", 0, t.end), None, "rejection"),
        Figure("0.9 cap limit s", reach, ("<=", 30), "convergence"),
        Figure("x old way", ours / old if old else math.inf, (">=", 90), "other"),
        Figure("x old way, after 60 s", after / old if old else math.inf, (">=", 100), "other"),
        Figure("x fixed 4", ours / fixed if fixed else math.inf, (">=", 10), "other"),
        Figure("calls/s ours", ours, None, "other"),
        Figure("old way", old, None, "other"),
        Figure("fixed 4", fixed, None, "other"),
    ]


class _AsSimulated:
    """A run's samples read as the simulator's figures read its trace (`sim.Measures`), so
    the shapes' figures are computed by the simulator's own functions. Answers are counted
    when they arrive (the simulator counts calls when sent: the same over whole windows)."""

    def __init__(self, m: _Measured) -> None:
        self.scenario = m.scenario
        self._trace = m.trace

    def goodput(self, t0: float, t1: float) -> float:
        return self._trace.rate("ok", t0, t1)

    def share(self, outcome: sim.Outcome, t0: float, t1: float) -> float:
        t = self._trace
        if outcome == "ok":
            return t.share("ok", t0, t1)
        if outcome == "429":
            return t.share("rejected", t0, t1)
        if outcome == "503":  # every refusal that is not a 429 (5xx)
            return t.share("refused", t0, t1) - t.share("rejected", t0, t1)
        raise ValueError(f"the samples do not count {outcome!r} apart")

    def first_time(
        self, t0: float, t1: float, ok: Callable[[float], bool], step_s: float = 0.5
    ) -> float | None:
        after = self._trace.first(t0, t1, ok, step_s)
        return None if math.isinf(after) else t0 + after

    def sends_during_retry_after(self) -> float:
        return self._trace.sent_in_pause()


_SHAPE_COLUMNS: dict[str, Column] = {
    "goodput/allowed": "goodput",
    "refused share": "rejection",
    "down: within 10 % s": "convergence",
    "up: within 10 % s": "convergence",
}


def _with_bars(figures: sim.Figures, bars: dict[str, tuple[str, float]]) -> list[Figure]:
    return [
        Figure(name, value, bars.get(name), _SHAPE_COLUMNS.get(name, "other"))
        for name, value in figures.items()
    ]


def _shape(m: _Measured) -> list[Figure]:
    """The simulator's shape figures, against the shapes' goals (the simulator's tests hold
    some shapes to lower floors, marked BELOW_GOAL there)."""
    first = m.scenario.upstream.phases[0]
    strict = first.refuse_503
    bars = {
        "goodput/allowed": (">=", 0.9 if strict else 0.98 if first.quota_headers else 0.95),
        "refused share": ("<=", 0.02 if strict else 0.01),
        "sent in pause": ("==", 0.0),
        "refused after 1st window": ("==", 0.0),
    }
    return _with_bars(sim.figures_shape(_AsSimulated(m)), bars)


def _steps(m: _Measured) -> list[Figure]:
    bars = {
        "goodput/allowed": (">=", 0.95),
        "refused share": ("<=", 0.01),
        "down: within 10 % s": ("<=", 10.0),
        "up: within 10 % s": ("<=", 10.0),
        "sent in pause": ("==", 0.0),
    }
    return _with_bars(sim.figures_steps(_AsSimulated(m)), bars)


# ----------------------------------------------------------------------------- the plans


REPLAY_SHAPE_S = 45.0
"""Real seconds per rate-limit shape (a 10 s warm-up, then 35 s measured); minute windows
run REPLAY_MINUTE_S (the first window, then one whole window measured), steps their script."""
REPLAY_MINUTE_S = 130.0


def _replayed(scenario: sim.Scenario) -> sim.Scenario:
    """A shape shortened for the HTTP replay (the simulator runs it longer, over seeds)."""
    if len(scenario.upstream.phases) > 1:
        return scenario
    long = scenario.upstream.phases[0].window_s >= 60
    return replace(scenario, duration_s=REPLAY_MINUTE_S if long else REPLAY_SHAPE_S)


@dataclass(frozen=True)
class Plan:
    """A simulator scenario as this bench runs it: its speedup, figures and smoke length."""

    scenario: sim.Scenario
    speedup: float
    measure: Callable[[_Measured], list[Figure]]
    smoke_s: float | None = None  # real seconds in a smoke run; None: left out of it
    baselines: tuple[sim.Client, ...] = ()  # run beside ours, each on its own upstream
    note: str = ""
    quota_format: str = "x"  # how an upstream with quota headers tells them


PLANS: dict[str, Plan] = {
    "S1": Plan(sim.S1_RATE_LIMIT, 1.0, _s1, smoke_s=6.0),
    "S2": Plan(
        replace(
            sim.S2_STEP,
            upstream=sim.Upstream(
                (
                    sim.rate_limited(0.0),
                    sim.rate_limited(20.0, sim.RATE / 2),
                    sim.rate_limited(65.0),
                )
            ),
            duration_s=105.0,
        ),
        1.0,
        _s2,
        note="phases 20/45/40 s (simulator: 30/45/40 s)",
    ),
    "S3": Plan(
        replace(sim.S3_LATENCY_SHIFT, duration_s=130.0),
        2.0,  # x4 would make phase 0 1,280 calls/s: more than the client's CPU can send
        _s3,
        smoke_s=8.0,
        note="130 scenario s (simulator: 190 s)",
    ),
    "S4": Plan(
        replace(
            sim.S4_OUTAGE,
            upstream=sim.Upstream(
                (
                    sim.rate_limited(0.0),
                    sim.rate_limited(30.0, mode="fail_fast"),
                    sim.rate_limited(45.0, mode="black_hole"),
                    sim.rate_limited(60.0),
                )
            ),
            duration_s=100.0,
        ),
        1.0,
        lambda m: _outage(m, slow=False),
        note="phases 30/15/15/40 s (simulator: 30/30/30/40 s); fail fast: SIGTERM",
    ),
    "S4-slow": Plan(
        sim.S4_OUTAGE_SLOW,
        4.0,
        lambda m: _outage(m, slow=True),
        note="fail fast: SIGTERM",
    ),
    "S5": Plan(sim.S5_LIGHT_LOAD, 1.0, _s5),
    "baselines": Plan(
        replace(sim.SLOW_BACKLOG, name="slow upstream: ours vs old way vs fixed 4"),
        4.0,
        _baselines,
        smoke_s=8.0,
        baselines=(sim.OLD_WAY, sim.FIXED_4),
        note="the three clients run at once, each on its own upstream with the same script",
    ),
    **{
        f"shape {key}": Plan(
            _replayed(sim.SHAPES[key]),
            1.0,
            _steps if key == "steps" else _shape,
            smoke_s=12.0 if key == "bucket b10" else None,
        )
        for key in sim.SHAPES
        if not key.startswith("headers")
    },
    "shape headers 10s structured": Plan(
        _replayed(sim.SHAPES["headers 10s"]),
        1.0,
        _shape,
        quota_format="structured",
        note="RateLimit + RateLimit-Policy",
    ),
    "shape headers 60s x": Plan(
        _replayed(sim.SHAPES["headers 60s"]), 1.0, _shape, note="X-RateLimit-*, Reset in seconds"
    ),
    "shape headers 60s x-unix": Plan(
        _replayed(sim.SHAPES["headers 60s"]),
        1.0,
        _shape,
        quota_format="x-unix",
        note="X-RateLimit-*, Reset as a Unix time",
    ),
}


def _pool() -> tuple[list[Sms], list[bytes]]:
    """SMS for the processor and the same records as request bodies for the old ways."""
    records = list(synthetic_sms(random.Random(1), count=SMS_POOL))
    bodies = [orjson.dumps(record) for record in records]
    return [decode_sms(body, len(body)) for body in bodies], bodies


def _scaled(plan: Plan) -> list[sim.Client]:
    """The baseline clients in real time: pauses and timeouts divided by the speedup."""
    return [plan.scenario.with_client(c).scaled(plan.speedup).client for c in plan.baselines]


async def _run_plan(
    key: str, plan: Plan, smoke: bool, http: httpx.AsyncClient, log_dir: Path
) -> dict[str, Any]:
    scenario = plan.scenario
    if smoke and plan.smoke_s:
        scenario = replace(scenario, duration_s=plan.smoke_s * plan.speedup)
    real = scenario.scaled(plan.speedup)
    pool, bodies = _pool()
    upstreams = [
        _Upstream(http, log_dir, f"{key}-{n}", plan.quota_format)
        for n in range(1 + len(plan.baselines))
    ]
    try:
        first = real.upstream.phases[0]
        await asyncio.gather(*(u.apply(first, real.upstream.retry_after_s) for u in upstreams))
        cpu, wall = time.process_time(), time.monotonic()
        upstream_cpu = sum(u.cpu_s() for u in upstreams)
        fixed = (
            _fixed(client, u.url, bodies, real.duration_s)
            for client, u in zip(_scaled(plan), upstreams[1:], strict=True)
        )
        trace, baseline_ok = await asyncio.gather(
            _adaptive(real, plan.speedup, upstreams[0], pool), asyncio.gather(*fixed)
        )
        wall = time.monotonic() - wall
        upstream_cpu = sum(u.cpu_s() for u in upstreams) - upstream_cpu
        cpu = time.process_time() - cpu
    finally:
        for upstream in upstreams:
            await upstream.stop()
    figures = plan.measure(_Measured(scenario, trace, baseline_ok))
    lags = sorted(s.lag for s in trace.samples)
    backlog = scenario.load.arrival_rate_per_s is None
    return {
        "scenario": key,
        "name": scenario.name,
        "speedup": plan.speedup,
        "seconds": round(wall, 1),
        "smoke": smoke,
        "note": plan.note,
        "figures": [asdict(f) | {"met": f.met} for f in figures],
        "harness": {
            "client_cpu": cpu / wall,
            "upstream_cpu": upstream_cpu / wall,
            "loop_lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))],
            "loop_lag_max_ms": 1000 * lags[-1],
            "feeder_idle": (
                sum(s.waiting <= 0 for s in trace.samples) / len(trace.samples)
                if backlog
                else math.nan
            ),
        },
    }


async def run(smoke: bool = False, only: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the plans (`only` these keys; smoke: those with a smoke length, that long) and
    return one row of figures per scenario. Raises ValueError for an unknown key (or one
    without a smoke length in a smoke run), RuntimeError if an upstream fails."""
    keys = list(only) if only else [k for k, p in PLANS.items() if not smoke or p.smoke_s]
    for key in keys:
        if key not in PLANS:
            raise ValueError(f"unknown scenario {key!r}; choose from {', '.join(PLANS)}")
        if smoke and PLANS[key].smoke_s is None:
            raise ValueError(f"{key} has no smoke version")
    log_dir = Path(tempfile.mkdtemp(prefix="limiter-bench-"))
    logger.info("upstream logs: %s", log_dir)
    rows = []
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
        for key in keys:
            logger.info("%s: running...", key)
            row = await _run_plan(key, PLANS[key], smoke, http, log_dir)
            logger.info("%s: %s s, %s", key, row["seconds"], _cells(row["figures"], None))
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the table


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "never"
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _cells(figures: list[dict[str, Any]], column: Column | None) -> str:
    """The figures of one column (all with None), each with its bar and whether it was met."""
    parts = []
    for f in figures:
        if column is not None and f["column"] != column:
            continue
        text = f"{f['name']} {_fmt(f['value'])}"
        if f["bar"] is not None:
            op, threshold = f["bar"]
            text += f" ({op} {_fmt(threshold)}{'' if f['met'] else ', **missed**'})"
        parts.append(text)
    return "; ".join(parts) or "-"


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a markdown table, bars from tests/test_limiter.py beside each figure."""
    lines = [
        "| scenario | " + " | ".join(COLUMNS.values()) + " | harness |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for row in rows:
        h = row["harness"]
        idle = "" if math.isnan(h["feeder_idle"]) else f", feeder idle {h['feeder_idle']:.0%}"
        harness = (
            f"CPU client {h['client_cpu']:.0%}, upstream {h['upstream_cpu']:.0%}; loop lag "
            f"p99 {h['loop_lag_p99_ms']:.0f} ms, max {h['loop_lag_max_ms']:.0f} ms{idle}"
        )
        scenario = (
            f"**{row['scenario']}** {row['name']} (x{_fmt(row['speedup'])}, {row['seconds']} s)"
        )
        cells = [_cells(row["figures"], column) for column in COLUMNS]
        lines.append(f"| {scenario} | " + " | ".join(cells) + f" | {harness} |")
    notes = [f"- {row['scenario']}: {row['note']}" for row in rows if row["note"]]
    footer = [
        "",
        "Figures in scenario time (real seconds x speedup); CPU as a share of one core.",
        *notes,
    ]
    if any(row["smoke"] for row in rows):
        footer.append("Smoke run: seconds long, it proves the harness, the bars do not apply.")
    return "\n".join(lines + footer)


def _record(rows: list[dict[str, Any]], smoke: bool, command: str) -> None:
    """Record a full run in bench/results.json and docs/performance.md (a smoke run: a scratch
    copy of both), the way `python -m bench` does."""
    records = performance.limiter_records(rows, command, performance.machine_text(machine()))
    if smoke:
        scratch = Path(tempfile.mkdtemp(prefix="limiter-bench-smoke-"))
        performance.publish(records, scratch / "results.json", scratch / "performance.md")
        print(f"\nwritten: {scratch / 'performance.md'} (smoke run: a scratch copy)")
    else:
        performance.publish(records)
        print(f"\nwritten: {performance.PAGE}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m bench.limiter_scenarios",
        description="The limiter scenarios of stream/devkit/limiter_sim/ against stream upstream.",
    )
    parser.add_argument("--smoke", action="store_true", help="S1, S3 and the baselines, short")
    parser.add_argument("--only", help=f"comma-separated, from {', '.join(PLANS)}")
    args = parser.parse_args(argv)
    only = [k.strip() for k in args.only.split(",") if k.strip()] if args.only else None
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)  # progress only: httpx logs every request at INFO
    started = time.monotonic()
    try:
        rows = asyncio.run(run(smoke=args.smoke, only=only))
    except ValueError as exc:
        parser.error(str(exc))
    print(markdown(rows))
    _record(rows, args.smoke, performance.command_line("python -m bench.limiter_scenarios", argv))
    print(f"\n{time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
