"""The figures measured on each simulated run, and `SUITE`, which pairs them with scenarios.

What the tests assert on (and a benchmark replaying the scenarios would report): plain
numbers per run, so runs can be measured in worker processes and compared across seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from stream.devkit.limiter_sim.engine import simulate
from stream.devkit.limiter_sim.scenarios import (
    ALLOWED,
    CAP,
    FIXED_4,
    OLD_WAY,
    RATE,
    S1_RATE_LIMIT,
    S2_STEP,
    S3_LATENCY_SHIFT,
    S4_OUTAGE,
    S4_OUTAGE_SLOW,
    S5_LIGHT_LOAD,
    SHAPES,
    SLOW_BACKLOG,
    WARMUP_S,
)
from stream.devkit.limiter_sim.spec import Scenario
from stream.devkit.limiter_sim.trace import Measures, Trace

__all__ = [
    "NEVER",
    "OLD_WAY_S",
    "SLOW_CAPACITY",
    "SUITE",
    "Figures",
    "figures_baseline",
    "figures_ours",
    "figures_s1",
    "figures_s2",
    "figures_s3",
    "figures_s4",
    "figures_s4_slow",
    "figures_s5",
    "figures_shape",
    "figures_steps",
    "run_suite_job",
]

Figures = dict[str, float]

SLOW_CAPACITY = CAP / 4.4  # the brief's figure: 64 calls in flight at the 4.4 s median
NEVER = math.inf


def _phase(scenario: Scenario, index: int) -> float:
    return scenario.upstream.phases[index].at_s


def _first(trace: Measures, t0: float, t1: float, ok: Callable[[float], bool]) -> float:
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

    def converged(x: float) -> bool:
        return abs(t.goodput(x, x + 2) / half - 1.0) <= 0.15

    reached = _first(t, rise, end, lambda x: t.goodput(x, x + 5) >= 0.9 * RATE)
    return {
        "drop: goodput +-15 % s": _first(t, drop, rise, converged),
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

    return {
        "calls in outage": t.sent(down, up),
        "outage calls/60 s pre": t.sent(down, up) / (before * (up - down)),
        "recovery s": _first(t, up, end, recovered),
        # Throughput, not the concurrency limit: once the rate is paced, the limit need
        # not climb back to where slow start had left it.
        "throughput after/before": t.completions(up + 30, end) / before,
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


def _refused(t: Measures, t0: float, t1: float) -> float:
    return t.share("429", t0, t1) + t.share("503", t0, t1)


def figures_shape(t: Measures) -> Figures:
    """Goodput against the allowed rate and the refused share, after the warm-up; for a
    fixed window over whole windows (its allowed rate is per window, not per second)."""
    first = t.scenario.upstream.phases[0]
    t0, t1 = WARMUP_S, t.scenario.duration_s
    if first.window_s > 0:
        w = first.window_s
        t0, t1 = math.ceil(t0 / w) * w, math.floor(t1 / w) * w
    figures = {
        "goodput/allowed": t.goodput(t0, t1) / first.rate_per_s,
        "refused share": _refused(t, t0, t1),
        "sent in pause": t.sends_during_retry_after(),
    }
    if first.quota_headers:
        figures["refused after 1st window"] = _refused(t, first.window_s, t1)
    return figures


def figures_steps(t: Measures) -> Figures:
    """Each step: seconds until goodput (over 2 s) is within 10 % of the new rate."""
    down, up = _phase(t.scenario, 1), _phase(t.scenario, 2)
    half = ALLOWED / 2

    def near(rate: float) -> Callable[[float], bool]:
        return lambda x: abs(t.goodput(x, x + 2) / rate - 1.0) <= 0.1

    return {
        "goodput/allowed": (t.goodput(WARMUP_S, down) + t.goodput(up + 10, t.scenario.duration_s))
        / ALLOWED
        / 2,
        "down: goodput/allowed": t.goodput(down + 10, up) / half,
        "refused share": _refused(t, WARMUP_S, t.scenario.duration_s),
        "down: within 10 % s": _first(t, down, up, near(half)),
        "up: within 10 % s": _first(t, up, t.scenario.duration_s, near(ALLOWED)),
        "sent in pause": t.sends_during_retry_after(),
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
    **{
        f"shape {key}": (scenario, figures_steps if key == "steps" else figures_shape)
        for key, scenario in SHAPES.items()
    },
}


def run_suite_job(job: tuple[str, int]) -> tuple[str, int, Figures]:
    """Simulate one (suite entry, seed) and measure it; a picklable unit of work."""
    name, seed = job
    scenario, measure = SUITE[name]
    return name, seed, measure(simulate(scenario, seed))
