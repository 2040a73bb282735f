"""What one simulated run recorded, and the measures the figures are computed from."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

from stream.devkit.limiter_sim.spec import Outcome, Scenario

__all__ = ["Call", "Measures", "Trace"]


class Measures(Protocol):
    """What the rate-limit shapes' figures read from a run: a simulated `Trace`, or the
    samples a benchmark took of a run over real HTTP (`bench.limiter_scenarios`), so both
    report the same figures. Rates per second over [t0, t1)."""

    @property
    def scenario(self) -> Scenario: ...

    def goodput(self, t0: float, t1: float) -> float: ...

    def share(self, outcome: Outcome, t0: float, t1: float) -> float: ...

    def first_time(
        self, t0: float, t1: float, ok: Callable[[float], bool], step_s: float = 0.5
    ) -> float | None: ...

    def sends_during_retry_after(self) -> float: ...


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
