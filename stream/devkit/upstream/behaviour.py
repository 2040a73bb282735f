"""What the reference upstream does: its behaviour (rate limit, faults, latency) and the
schedule of phases that changes it over time, as plain values checked when made."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stream.config import parse_duration
from stream.errors import ConfigError

__all__ = ["QUOTA_FORMATS", "Invalid", "Phase", "UpstreamBehaviour", "parse_schedule"]


class Invalid(ValueError):
    """A behaviour, schedule or request the upstream cannot use; the message says why."""


def _same_kind(value: object, kind: type) -> bool:
    """Exact type match: True is not an integer setting, 1 is not a switch."""
    return type(value) is kind


@dataclass(frozen=True)
class UpstreamBehaviour:
    """How the upstream answers; times in seconds, 0 switches a limit off.

    Latency is lognormal with median `latency_median` and shape `latency_sigma` (capped at
    `latency_max`) when `latency_median` > 0, else the fixed `latency`. `burst` 0 means
    max(1, rate / 10). `retry_after_date` sends Retry-After as an HTTP-date, not seconds.
    """

    latency: float = 0.0
    latency_median: float = 0.0
    latency_sigma: float = 0.0
    latency_max: float = 20.0
    rate: float = 0.0
    burst: float = 0.0
    max_concurrency: int = 0
    error_rate: float = 0.0
    black_hole: bool = False
    retry_after_date: bool = False
    window: float = 0.0
    refuse_503: bool = False
    quota_headers: str = ""

    def __post_init__(self) -> None:
        if self.quota_headers not in QUOTA_FORMATS:
            raise Invalid(
                f"quota_headers: one of {', '.join(map(repr, QUOTA_FORMATS))}, "
                f"got {self.quota_headers!r}"
            )
        for name, kind in _FIELD_KINDS.items():
            if kind is str:
                continue
            value: float = getattr(self, name)
            if kind is float and _same_kind(value, int):
                value = float(value)
                object.__setattr__(self, name, value)  # rate=200 means 200.0
            if not _same_kind(value, kind):
                raise Invalid(f"{name}: expected {kind.__name__}, got {value!r}")
            if value < 0 or (kind is float and not math.isfinite(value)):
                raise Invalid(f"{name}: must be a finite number >= 0, got {value!r}")
        if self.error_rate > 1:
            raise Invalid(f"error_rate: must be within 0..1, got {self.error_rate!r}")

    def with_changes(self, changes: Mapping[str, object]) -> UpstreamBehaviour:
        """A copy with `changes` applied; values may be JSON values or strings like "200".

        Raises ValueError naming the field for an unknown field or a bad value.
        """
        coerced: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in _FIELD_KINDS:
                raise Invalid(f"{name}: unknown behaviour field")
            coerced[name] = _coerce(name, value, _FIELD_KINDS[name])
        return dataclasses.replace(self, **coerced)

    def latency_s(self, rng: random.Random) -> float:
        if self.latency_median > 0:
            sampled = rng.lognormvariate(math.log(self.latency_median), self.latency_sigma)
            return min(sampled, self.latency_max)
        return self.latency

    def bucket_size(self) -> float:
        return self.burst if self.burst > 0 else max(1.0, self.rate / 10)

    def window_quota(self) -> int:
        return max(1, round(self.rate * self.window))


QUOTA_FORMATS = ("", "x", "x-unix", "ietf", "structured")
"""Values of `quota_headers`: none, or how the quota is told (see the module docstring)."""


_FIELD_KINDS: dict[str, type] = {
    f.name: type(f.default) for f in dataclasses.fields(UpstreamBehaviour)
}


def _coerce(name: str, value: object, kind: type) -> object:
    """A JSON value or a CLI/schedule string as `kind` (bool, int, float or str)."""
    if kind is str:
        if isinstance(value, str):
            return value
        raise Invalid(f"{name}: expected a string, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise Invalid(f"{name}: expected true or false, got {value!r}")
    if isinstance(value, bool):
        raise Invalid(f"{name}: expected a number, got {value!r}")
    try:
        number = float(value) if isinstance(value, int | float | str) else math.nan
    except ValueError:
        number = math.nan
    if kind is int and number.is_integer():
        return int(number)
    if kind is float and math.isfinite(number):
        return number
    expected = "an integer" if kind is int else "a number"
    raise Invalid(f"{name}: expected {expected}, got {value!r}")


@dataclass(frozen=True)
class Phase:
    """One step of a schedule: the behaviour fields it changes, held for `duration_s`."""

    duration_s: float
    changes: Mapping[str, object]

    def to_json(self) -> dict[str, object]:
        return {"duration": self.duration_s, **self.changes}


def parse_schedule(spec: str | Sequence[Mapping[str, object]]) -> tuple[Phase, ...]:
    """Phases from `"20s:rate=200,latency=0.1,20s:rate=100,0s:rate=200"` or a JSON list.

    In the string form a `<duration>:` prefix starts a phase and bare `field=value` items
    add to the current one. In the list form each object has `duration` (seconds or a
    string like "20s") and the fields it changes. Every field is checked against
    UpstreamBehaviour; raises ValueError naming what is wrong.
    """
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("["):
            loaded = json.loads(text)
            if not isinstance(loaded, list):
                raise Invalid("schedule: a JSON schedule must be a list of phases")
            return parse_schedule(loaded)
        return _parse_schedule_text(text)
    phases = []
    for item in spec:
        if not isinstance(item, Mapping) or "duration" not in item:
            raise Invalid(f"schedule: each phase needs a duration, got {item!r}")
        changes = {k: v for k, v in item.items() if k != "duration"}
        phases.append(Phase(_duration(item["duration"]), changes))
    return _checked(phases)


def _parse_schedule_text(text: str) -> tuple[Phase, ...]:
    phases: list[Phase] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        head, colon, rest = item.partition(":")
        if colon:
            phases.append(Phase(_duration(head), {}))
            item = rest
        if not phases:
            raise Invalid(f"schedule: {item!r} comes before any '<duration>:' phase")
        name, equals, value = item.partition("=")
        if not equals:
            raise Invalid(f"schedule: {item!r} is not field=value")
        phases[-1] = Phase(phases[-1].duration_s, {**phases[-1].changes, name.strip(): value})
    return _checked(phases)


def _duration(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration("schedule", value)
        except ConfigError as exc:
            raise Invalid(str(exc)) from None
    raise Invalid(f"schedule: {value!r} is not a duration")


def _checked(phases: list[Phase]) -> tuple[Phase, ...]:
    """The phases with their changes validated and typed (`"200"` becomes 200.0)."""
    typed = []
    for phase in phases:
        changed = UpstreamBehaviour().with_changes(phase.changes)
        typed.append(Phase(phase.duration_s, {k: getattr(changed, k) for k in phase.changes}))
    return tuple(typed)

