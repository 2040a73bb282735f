"""Discrete-event simulator: the adaptive limiter against a scripted upstream, in virtual time.

The scenario is plain data (frozen dataclasses), so the same `Scenario` can later be replayed
against a real HTTP upstream, time-scaled, by a benchmark:

    Scenario
     ├── Upstream   phases over time: latency, a rate limit (token bucket with 429 +
     │              Retry-After, strict spacing with bare 503s, or a fixed window with
     │              Retry-After to its end, optionally with quota headers), a concurrency
     │              cap (503 beyond), or an outage mode (fast 503s, black hole)
     ├── Load       a backlog (work always waiting) or Poisson arrivals
     └── Client     the adaptive limiter, or a fixed concurrency with a pause between calls

`simulate(scenario, seed)` drives the limiter's synchronous core (`try_acquire`,
`next_attempt_at`, the permit reports) with a virtual clock, and reports outcomes exactly
like the HTTP processor: 2xx -> success(latency, quota), 429 / 503 -> dropped(retry_after,
status, quota), timeout -> dropped(None). Pure Python, no I/O, deterministic per seed.

In modules: `spec` (the scenario data), `engine` (`simulate`), `trace` (what a run
recorded), `scenarios` (S1-S5, the baselines, the rate-limit shapes) and `figures` (the
figures measured on each run, `SUITE`, which pairs them for the tests, `run_suite_job`).
"""

from stream.devkit.limiter_sim.engine import simulate
from stream.devkit.limiter_sim.figures import (
    NEVER,
    OLD_WAY_S,
    SLOW_CAPACITY,
    SUITE,
    Figures,
    figures_baseline,
    figures_ours,
    figures_s1,
    figures_s2,
    figures_s3,
    figures_s4,
    figures_s4_slow,
    figures_s5,
    figures_shape,
    figures_steps,
    run_suite_job,
)
from stream.devkit.limiter_sim.scenarios import (
    ALLOWED,
    BURST_S,
    CAP,
    FAST,
    FIXED_4,
    JITTER_S,
    MINUTE_SHAPE_S,
    OLD_WAY,
    RATE,
    S1_RATE_LIMIT,
    S2_STEP,
    S3_LATENCY_SHIFT,
    S4_OUTAGE,
    S4_OUTAGE_SLOW,
    S5_LIGHT_LOAD,
    SHAPE_S,
    SHAPES,
    SLOW,
    SLOW_BACKLOG,
    WARMUP_S,
    bucket,
    capped,
    rate_limited,
    spacing,
    window,
)
from stream.devkit.limiter_sim.spec import (
    Client,
    Latency,
    Load,
    Mode,
    Outcome,
    Phase,
    Scenario,
    Upstream,
)
from stream.devkit.limiter_sim.trace import Call, Measures, Trace

__all__ = [
    "ALLOWED",
    "BURST_S",
    "CAP",
    "FAST",
    "FIXED_4",
    "JITTER_S",
    "MINUTE_SHAPE_S",
    "NEVER",
    "OLD_WAY",
    "OLD_WAY_S",
    "RATE",
    "S1_RATE_LIMIT",
    "S2_STEP",
    "S3_LATENCY_SHIFT",
    "S4_OUTAGE",
    "S4_OUTAGE_SLOW",
    "S5_LIGHT_LOAD",
    "SHAPES",
    "SHAPE_S",
    "SLOW",
    "SLOW_BACKLOG",
    "SLOW_CAPACITY",
    "SUITE",
    "WARMUP_S",
    "Call",
    "Client",
    "Figures",
    "Latency",
    "Load",
    "Measures",
    "Mode",
    "Outcome",
    "Phase",
    "Scenario",
    "Trace",
    "Upstream",
    "bucket",
    "capped",
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
    "rate_limited",
    "run_suite_job",
    "simulate",
    "spacing",
    "window",
]
