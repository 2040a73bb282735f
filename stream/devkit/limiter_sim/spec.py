"""A scenario as plain data: the upstream's phases, the offered load, the client.

Frozen dataclasses, so the same `Scenario` can be simulated or replayed against a real
HTTP upstream, time-scaled (`Scenario.scaled`), by a benchmark.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = ["Client", "Latency", "Load", "Mode", "Outcome", "Phase", "Scenario", "Upstream"]

Outcome = Literal["ok", "429", "503", "timeout"]
Mode = Literal["healthy", "fail_fast", "black_hole"]


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
    window_s: float = 0.0  # > 0: a fixed window of rate_per_s * window_s calls instead
    refuse_503: bool = False  # refuse with a bare 503 (nginx limit_req), not 429 + Retry-After
    quota_headers: bool = False  # a fixed window tells remaining calls and reset in headers

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
    retry_after_s: float = 1.0  # Retry-After sent with every token-bucket 429
    reject_latency_s: float = 0.005  # how fast a 429 or a fail-fast 503 comes back
    jitter_s: float = 0.0  # a request reaches the rate limiter up to this long after sending

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
                p,
                at_s=p.at_s / speedup,
                latency=latency,
                rate_per_s=p.rate_per_s * speedup,
                burst_s=p.burst_s / speedup,
                window_s=p.window_s / speedup,
            )

        upstream = Upstream(
            tuple(phase(p) for p in self.upstream.phases),
            retry_after_s=self.upstream.retry_after_s / speedup,
            reject_latency_s=self.upstream.reject_latency_s / speedup,
            jitter_s=self.upstream.jitter_s / speedup,
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
