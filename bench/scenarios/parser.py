"""parser: `parse_sms` µs per SMS, this parser against the parser of BEFORE_COMMIT.

The "before" parser is `stream/sms/parser.py` as of BEFORE_COMMIT, read with `git show`
and loaded as a module of its own, so both run in one process on one corpus: the synthetic
mix (`synthetic_sms`, the traffic `stream produce` and the other scenarios send) plus every
SMS of tests/data/sms_labelled.jsonl. A first pass checks that both answer the same on
every SMS (or the scenario fails: the speed may change, the results not), and warms both
up. Each repeat then times both, back to back in alternating order: the mean over the whole
corpus (the CPU a consumer spends per SMS; a pre-empted call inflates it on a busy machine)
and the median of per-SMS times (robust to that). Ratios are taken pair by pair.
No broker is involved; the figures are CPU-bound and only as quiet as the machine.

The goal is judged as a ratio, because absolute times are not comparable across machines:
the goal is 15 µs per SMS on a machine where the before parser takes ~40 µs, so
after / before, median SMS <= GOAL_RATIO (0.375). The µs figures are reported beside it.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.figures import Figure, ScenarioResult, ratios
from bench.harness import BENCH_DIR, BenchError, Context
from stream.sms.parser import parse_sms
from stream.tools.synthetic import synthetic_sms

__all__ = ["run"]

BEFORE_COMMIT = "912dcc35d0985ac9c45b6d686ae410106caa1ed6"
"""The commit whose parser the golden outputs (tests/data/parser_golden.jsonl) hold."""
BEFORE_US_AT_ISSUE = 40.0
"""Its median µs per SMS on the machine the goal was set on."""
GOAL_US = 15.0
"""The goal on that machine; elsewhere only the ratio below is comparable."""
GOAL_RATIO = GOAL_US / BEFORE_US_AT_ISSUE
"""after / before, median SMS: the goal as judged on any machine (0.375)."""
SEED = 3
LABELLED = BENCH_DIR.parent / "tests" / "data" / "sms_labelled.jsonl"

Parse = Callable[[str, str], dict[str, Any]]


def _before() -> Parse:
    """The pre-rewrite parse_sms, compiled from git into a module of its own."""
    try:
        source = subprocess.run(
            ["git", "show", f"{BEFORE_COMMIT}:stream/sms/parser.py"],
            cwd=BENCH_DIR.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(f"cannot read the parser of {BEFORE_COMMIT[:7]} from git: {exc}") from exc
    module = types.ModuleType("parser_before")
    exec(compile(source, f"{BEFORE_COMMIT[:7]}:stream/sms/parser.py", "exec"), module.__dict__)  # noqa: S102
    before: Parse = module.parse_sms
    return before


def _corpus(count: int) -> list[tuple[str, str]]:
    sms = synthetic_sms(random.Random(SEED), count=count)
    rows = [(str(record["body"]), str(record["sender"])) for record in sms]
    for line in Path(LABELLED).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows.append((row["body"], row["sender"]))
    return rows


def _time(parse: Parse, corpus: list[tuple[str, str]]) -> tuple[float, float]:
    """(mean, median) µs per SMS over one pass of the corpus."""
    clock = time.perf_counter
    each: list[float] = []
    started = clock()
    for body, sender in corpus:
        t0 = clock()
        parse(body, sender)
        each.append(clock() - t0)
    total = clock() - started
    return total / len(corpus) * 1e6, statistics.median(each) * 1e6


async def run(ctx: Context) -> ScenarioResult:
    before = _before()
    corpus = _corpus(ctx.size(20_000, 1_000))
    changed = sum(before(body, sender) != parse_sms(body, sender) for body, sender in corpus)
    if changed:
        raise BenchError(f"{changed} of {len(corpus)} SMS parse differently than before")
    means: dict[str, list[float]] = {"before": [], "after": []}
    medians: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(ctx.repeats):
        order = [("before", before), ("after", parse_sms)]
        for name, parse in order if i % 2 == 0 else order[::-1]:
            mean, median = _time(parse, corpus)
            means[name].append(mean)
            medians[name].append(median)
    figures = [
        Figure("before, mean", "µs/SMS", means["before"]),
        Figure("after, mean", "µs/SMS", means["after"]),
        Figure("after / before, mean", "", ratios(means["after"], means["before"])),
        Figure("before, median SMS", "µs", medians["before"]),
        Figure("after, median SMS", "µs", medians["after"]),
        Figure(
            "after / before, median SMS",
            "",
            ratios(medians["after"], medians["before"]),
            goal=("<=", GOAL_RATIO),
            note=f"{GOAL_US:g} µs of the ~{BEFORE_US_AT_ISSUE:g} µs the before parser took "
            "on the machine the goal was set on",
        ),
    ]
    notes = [
        f"{len(corpus):,} SMS (synthetic mix, seed {SEED}, and the labelled set), same "
        f"results from both; before = {BEFORE_COMMIT[:7]}; one process, alternating order."
    ]
    return ScenarioResult("parser", {"sms": len(corpus)}, figures, notes)
