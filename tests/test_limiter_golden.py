"""The limiter's decisions on the simulator's manual clock, pinned: a golden trace.

Every adaptive scenario of `limiter_sim.SUITE`, on one seed, records each grant (its time,
rank, and the estimate, pace, limit, source, pauses and refusals right after it) and each
call (sent, answered, outcome). `data/limiter_golden.txt` holds, per run, the SHA-256 of
that record and a readable digest every 10 virtual seconds. A change to the limiter's
layout must leave the file byte-identical; a change of behaviour rewrites it, on purpose:

    .venv/bin/python -m tests.test_limiter_golden
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from stream.devkit import limiter_sim as sim
from stream.devkit.limiter_sim import engine
from stream.processors.limiter import AdaptiveLimiter, Permit

GOLDEN = Path(__file__).parent / "data" / "limiter_golden.txt"
SEEDS = (0,)
DIGEST_EVERY_S = 10.0
RUNS = [name for name, (scenario, _) in sim.SUITE.items() if scenario.client.kind == "adaptive"]


class RecordingLimiter(AdaptiveLimiter):
    """The limiter, noting its state right after every grant."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.grants: list[str] = []

    def try_acquire(self) -> Permit | None:
        permit = super().try_acquire()
        if permit is not None:
            s = self.state
            self.grants.append(
                f"{permit.started_at!r} {len(self.grants) + 1} {s.estimated_rate!r}"
                f" {s.paced_rate!r} {s.limit!r} {s.source} {s.pauses} {s.refusals}"
            )
        return permit


def record(name: str, seed: int, patch: pytest.MonkeyPatch) -> str:
    """One run's golden entry: its hash line, then a digest line per DIGEST_EVERY_S."""
    made: list[RecordingLimiter] = []

    def factory(**kwargs: Any) -> RecordingLimiter:
        made.append(RecordingLimiter(**kwargs))
        return made[-1]

    scenario, _ = sim.SUITE[name]
    with patch.context() as m:
        m.setattr(engine, "AdaptiveLimiter", factory)
        trace = sim.simulate(scenario, seed)
    (limiter,) = made
    calls = [f"{c.sent_at!r} {c.done_at!r} {c.outcome}" for c in trace.calls]
    text = "\n".join([*limiter.grants, *calls])
    lines = [f"== {name} seed {seed} sha256 {hashlib.sha256(text.encode()).hexdigest()}"]
    grants = limiter.grants
    index = 0
    t = DIGEST_EVERY_S
    while t <= scenario.duration_s:
        while index < len(grants) and float(grants[index].split(" ", 1)[0]) < t:
            index += 1
        last = grants[index - 1].split(" ", 2)[2] if index else "-"
        ok = sum(1 for c in trace.calls if c.outcome == "ok" and c.sent_at < t)
        lines.append(f"  t {t:g} granted {index} ok {ok} state {last}")
        t += DIGEST_EVERY_S
    return "\n".join(lines)


def golden_text(patch: pytest.MonkeyPatch) -> str:
    return "\n".join(record(name, seed, patch) for name in RUNS for seed in SEEDS) + "\n"


def test_the_simulated_decisions_match_the_golden_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    actual = golden_text(monkeypatch)
    expected = GOLDEN.read_text()
    for want, got in zip(expected.split("\n== "), actual.split("\n== "), strict=True):
        assert got == want  # the first run that differs
    assert GOLDEN.read_bytes() == actual.encode()


if __name__ == "__main__":
    GOLDEN.write_text(golden_text(pytest.MonkeyPatch()))
