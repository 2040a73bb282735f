"""Figures, their summaries, and the two renderings of a run (JSON and a markdown table).

Machines here are noisy, so a figure is never one number: it keeps every repeat, and is
shown as the median with min-max. A ratio is computed pair by pair (repeat i of A against
repeat i of B, measured back to back) before it is summarised, so drift between repeats
cancels instead of adding up.
"""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "Figure",
    "Metrics",
    "ScenarioResult",
    "fmt",
    "markdown",
    "percentile",
    "ratios",
]

_GOAL_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


def fmt(value: float) -> str:
    """Three significant digits at most, thousands separated: 12,345 / 54.3 / 0.85."""
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Pairwise a[i] / b[i]: each pair was measured in the same repeat."""
    return [a / b if b else math.nan for a, b in zip(numerators, denominators, strict=True)]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..1) of exact samples."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Figure:
    """One measured quantity over the repeats; `goal` like (">=", 0.8) is checked, not enforced."""

    label: str
    unit: str
    values: list[float]
    goal: tuple[str, float] | None = None
    note: str = ""

    @property
    def median(self) -> float:
        clean = [v for v in self.values if not math.isnan(v)]
        return statistics.median(clean) if clean else math.nan

    @property
    def low(self) -> float:
        return min((v for v in self.values if not math.isnan(v)), default=math.nan)

    @property
    def high(self) -> float:
        return max((v for v in self.values if not math.isnan(v)), default=math.nan)

    @property
    def count(self) -> int:
        """Repeats that gave a value (a scenario may have nothing to measure in one)."""
        return sum(not math.isnan(v) for v in self.values)

    @property
    def met(self) -> bool | None:
        """Whether the median meets the goal (None without a goal)."""
        if self.goal is None:
            return None
        op, threshold = self.goal
        return _GOAL_OPS[op](self.median, threshold)

    def summary(self) -> str:
        spread = "" if self.count < 2 else f" [{fmt(self.low)}-{fmt(self.high)}]"
        return f"{self.label} {fmt(self.median)}{spread} {self.unit}".rstrip()

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "median": self.median,
            "n": self.count,
            "min": self.low,
            "max": self.high,
            "met": self.met,
        }


@dataclass
class ScenarioResult:
    """What one scenario measured: figures and notes for the tables; `detail` is the raw data
    behind them, kept out of the record in bench/results.json to keep it small."""

    scenario: str
    params: dict[str, Any]
    figures: list[Figure]
    notes: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        """The one line of figures printed when the scenario ends."""
        return f"{self.scenario}: " + "; ".join(f.summary() for f in self.figures)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "params": self.params,
            "figures": [f.to_json() for f in self.figures],
            "notes": self.notes,
            "detail": self.detail,
            "seconds": round(self.seconds, 1),
        }


def markdown(results: Sequence[dict[str, Any]]) -> str:
    """The results table; `results` are `ScenarioResult.to_json()` dicts (from one or more runs)."""
    lines = [
        "| scenario | figure | median | min-max | n | goal | note |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for result in results:
        for figure in result["figures"]:
            spread = f"{fmt(figure['min'])}-{fmt(figure['max'])}" if figure["n"] else "n/a"
            goal = "" if figure["goal"] is None else f"{figure['goal'][0]} {fmt(figure['goal'][1])}"
            if figure["met"] is not None:
                goal += " (met)" if figure["met"] else " (**missed**)"
            unit = f" {figure['unit']}" if figure["unit"] else ""
            lines.append(
                f"| {result['scenario']} | {figure['label']} | {fmt(figure['median'])}{unit} "
                f"| {spread} | {figure['n']} | {goal} | {figure['note']} |"
            )
    notes = [f"- **{r['scenario']}**: {note}" for r in results for note in r["notes"]]
    return "\n".join([*lines, "", *notes])


class Metrics:
    """One scrape of a `stream run`'s /metrics, for reading counters and histograms."""

    def __init__(self, samples: list[tuple[str, dict[str, str], float]]) -> None:
        self._samples = samples

    @classmethod
    def parse(cls, text: str) -> Metrics:
        return cls(
            [
                (sample.name, sample.labels, sample.value)
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            ]
        )

    def minus(self, before: Metrics) -> Metrics:
        """What happened between two scrapes of one process (counters and histograms)."""
        earlier = {(name, tuple(sorted(labels.items()))): v for name, labels, v in before._samples}
        return Metrics(
            [
                (name, labels, value - earlier.get((name, tuple(sorted(labels.items()))), 0.0))
                for name, labels, value in self._samples
            ]
        )

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels` (0 if none)."""
        return sum(
            value
            for sample, sample_labels, value in self._samples
            if sample == name and labels.items() <= sample_labels.items()
        )

    def mean(self, histogram: str) -> float:
        count = self.value(f"{histogram}_count")
        return self.value(f"{histogram}_sum") / count if count else math.nan

    def quantile(self, histogram: str, q: float) -> float:
        """Like Prometheus' histogram_quantile: linear within the bucket holding rank q."""
        buckets = sorted(
            (float(labels["le"]), value)
            for sample, labels, value in self._samples
            if sample == f"{histogram}_bucket"
        )
        if not buckets or buckets[-1][1] == 0:
            return math.nan
        rank = q * buckets[-1][1]
        lower, below = 0.0, 0.0
        for upper, cumulative in buckets:
            if cumulative >= rank:
                if math.isinf(upper):
                    return lower  # beyond the last finite bucket: its bound is all we know
                share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
                return lower + (upper - lower) * share
            lower, below = upper, cumulative
        return lower
