"""The simulator's scenarios: S1-S5, the baselines and the rate-limit shapes real APIs use.

Times are virtual seconds; a benchmark replaying these against a real upstream divides
them (and the latencies) by its time scale.
"""

from __future__ import annotations

from stream.devkit.limiter_sim.spec import (
    Client,
    Latency,
    Load,
    Mode,
    Phase,
    Scenario,
    Upstream,
)

__all__ = [
    "ALLOWED",
    "BURST_S",
    "CAP",
    "FAST",
    "FIXED_4",
    "JITTER_S",
    "MINUTE_SHAPE_S",
    "OLD_WAY",
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
    "WARMUP_S",
    "bucket",
    "capped",
    "rate_limited",
    "spacing",
    "window",
]

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


# The rate-limiter shapes real APIs use, each at ALLOWED calls per second unless
# named otherwise, behind the fast API, with 1 ms of arrival jitter at the limiter.

ALLOWED = 100.0
"""The shapes' allowed rate, calls per second."""
JITTER_S = 0.001
"""A request reaches the upstream's limiter up to 1 ms after it was sent. Measured over
loopback HTTP with the processor's own client and the pacer's precise timers, at an even
100/s: from the grant to the server's clock 0.35 ms at p1, 0.46 at p50, 0.65 at p99, and
the gaps between arrivals 0.4 ms short of the pace at p0.5. (With httpx and
millisecond timers it was 1.6-6.8 ms, p1-p99, and the simulator ran with 3 ms.)"""
SHAPE_S = 60.0
"""Virtual seconds per shape run: 50 s measured after the warm-up, several probe cycles."""
MINUTE_SHAPE_S = 190.0
"""Fixed windows of a minute: the first, and two whole ones after the warm-up."""


def bucket(at_s: float, rate: float, burst: float) -> Phase:
    """A token bucket of `burst` calls refilled at `rate`; 429 + Retry-After: 1 beyond."""
    return Phase(at_s, FAST, rate_per_s=rate, burst_s=burst / rate)


def spacing(at_s: float, rate: float) -> Phase:
    """Strict spacing (nginx limit_req without burst): a call within 1/rate of the last
    accepted one gets a bare 503."""
    return Phase(at_s, FAST, rate_per_s=rate, burst_s=1.0 / rate, refuse_503=True)


def window(at_s: float, quota: int, window_s: float, headers: bool = False) -> Phase:
    """A fixed window of `quota` calls per `window_s`; 429 with Retry-After to its end."""
    return Phase(at_s, FAST, rate_per_s=quota / window_s, window_s=window_s, quota_headers=headers)


def _shape(name: str, *phases: Phase, duration_s: float = SHAPE_S) -> Scenario:
    return Scenario(name, Upstream(phases, jitter_s=JITTER_S), duration_s=duration_s)


SHAPES: dict[str, Scenario] = {
    "spacing 503": _shape("strict spacing 100/s, bare 503", spacing(0.0, ALLOWED)),
    "bucket b1": _shape("token bucket 100/s, burst 1", bucket(0.0, ALLOWED, 1)),
    "bucket b10": _shape("token bucket 100/s, burst 10", bucket(0.0, ALLOWED, 10)),
    "bucket b100": _shape("token bucket 100/s, burst 100", bucket(0.0, ALLOWED, 100)),
    "bucket b1000": _shape("token bucket 100/s, burst 1000", bucket(0.0, ALLOWED, 1000)),
    "bucket 300/3000": _shape("token bucket 300/s, burst 3000", bucket(0.0, 300.0, 3000)),
    "window 1s": _shape("fixed window 100 per 1 s", window(0.0, 100, 1.0)),
    "window 10s": _shape(
        "fixed window 500 per 10 s", window(0.0, 500, 10.0), duration_s=2 * SHAPE_S
    ),
    "window 60s": _shape(
        "fixed window 6000 per 60 s", window(0.0, 6000, 60.0), duration_s=MINUTE_SHAPE_S
    ),
    "steps": _shape(
        "token bucket 100 -> 50 -> 100/s, burst 10",
        bucket(0.0, ALLOWED, 10),
        bucket(40.0, ALLOWED / 2, 10),
        bucket(80.0, ALLOWED, 10),
        duration_s=120.0,
    ),
    "headers 10s": _shape(
        "quota headers, 500 per 10 s", window(0.0, 500, 10.0, True), duration_s=SHAPE_S
    ),
    "headers 60s": _shape(
        "quota headers, 6000 per 60 s", window(0.0, 6000, 60.0, True), duration_s=MINUTE_SHAPE_S
    ),
}
"""Keyed as in SUITE (prefixed "shape "), with the figures of `figures_shape`."""

WARMUP_S = 10.0
"""The shapes' goals are measured after a 10 s warm-up."""
