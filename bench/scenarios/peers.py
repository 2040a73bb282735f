"""peers: `stream run` beside the same job written with Quix Streams and with arroyo, the
hand-written loop, and a bare `getmany` loop (the consumer's physical limit), in one run.

Every job reads the same pre-produced topic of N synthetic SMS (a new consumer group and
collection per run), decodes with `stream.sms.codec.decode_sms`, parses with
`stream.sms.parser.parse_sms`, and stores the same documents with an unordered
`insert_many` by `_id` (bench/peers/common.py); the bare loop only fetches and commits.
Quix Streams and arroyo use librdkafka (confluent-kafka wheels) and run from their own
venvs (bench/peers/venvs.py); a peer whose venv cannot be built is reported as n/a with
the reason, and the others are still measured. Each repeat runs the five jobs one after
another, the order rotated by one place per repeat so drift and a warming cache hit each
alike. A run is timed as in `pipeline`: from spawn until the group's committed offsets
reach the end of the topic (and again from its first commit: start-up excluded); CPU is
user + system of the process over the run, start-up included; peak RSS is VmHWM.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.figures import Figure, ScenarioResult, ratios
from bench.harness import Context
from bench.peers.venvs import PeerUnavailable, ensure_venv, peer_env
from bench.scenarios import pipeline
from bench.scenarios.pipeline import Run

__all__ = ["run"]

OURS, QUIX, ARROYO, LOOP, GETMANY = (
    "stream run",
    "Quix Streams",
    "arroyo",
    "hand-written loop",
    "bare getmany",
)
PEERS = (QUIX, ARROYO)
"""The jobs whose CPU per SMS `stream run` must beat by the goal's margin."""
CPU_GOAL = 0.8
RATE_GOAL = 1.2
"""The goals: CPU per SMS <= 0.8x the best peer's, SMS/s >= 1.2x every peer's."""


@dataclass(frozen=True)
class Job:
    """One of the five jobs."""

    label: str
    slug: str
    """Names its group, collection and log (and venv: bench/peers/requirements-<slug>.txt)."""
    module: str = ""
    """A child job run as `python -m module`; empty for pipeline's own two."""
    venv: bool = False


JOBS = (
    Job(OURS, "stream"),
    Job(QUIX, "quix", "bench.peers.quix_job", venv=True),
    Job(ARROYO, "arroyo", "bench.peers.arroyo_job", venv=True),
    Job(LOOP, "loop"),
    Job(GETMANY, "getmany", "bench.peers.getmany"),
)


async def _child_job(ctx: Context, job: Job, python: Path, topic: str, total: int) -> Run:
    """A peer (or the bare loop) as a child process, timed like pipeline's baseline."""
    name = ctx.name(job.slug)
    argv = [str(python), "-m", job.module, ctx.endpoints.kafka_bootstrap, topic, name]
    argv += [ctx.endpoints.mongo_url, ctx.db, name]
    child = ctx.spawn(f"peers-{job.slug}", argv, peer_env())
    timing = await ctx.wait_committed(
        name, topic, total, since=child.started, children=[child], limit_s=pipeline.TIMEOUT_S
    )
    measured = Run(timing, child.peak_rss_mib(), child.cpu_seconds())
    await child.stop()
    if job.label != GETMANY:
        await ctx.expect_stored(name, total)
        await ctx.drop(name)
    return measured


async def _interpreters(ctx: Context) -> tuple[dict[str, Path], dict[str, str]]:
    """Each child job's python, and why a peer has none (its venv could not be built)."""
    pythons: dict[str, Path] = {}
    missing: dict[str, str] = {}
    for job in JOBS:
        if not job.venv:
            pythons[job.label] = Path(sys.executable)
            continue
        try:
            pythons[job.label] = await ensure_venv(job.slug, ctx.log_dir)
        except PeerUnavailable as exc:
            print(f"peers: {job.label} not measured: {exc}", flush=True)
            missing[job.label] = str(exc)
    return pythons, missing


async def _measure(ctx: Context, job: Job, python: Path, topic: str, total: int) -> Run:
    if job.label == OURS:
        return (await pipeline.ours(ctx, topic, total))[0]
    if job.label == LOOP:
        return await pipeline.baseline(ctx, topic, total)
    return await _child_job(ctx, job, python, topic, total)


def _column(runs: list[Run | None], value: Callable[[Run], float]) -> list[float]:
    return [math.nan if r is None else value(r) for r in runs]


def _steady_rate(run: Run) -> float:
    """SMS/s after the first commit; nan when that commit already covered everything (a
    smoke-sized topic fits in one Quix checkpoint), where there is no rate to give."""
    return run.timing.processing_rate if run.timing.at_first < run.timing.total else math.nan


def _best(columns: list[list[float]]) -> list[float]:
    """Per repeat, the lowest of the peers' values that were measured (nan if none)."""
    return [
        min((v for v in vs if not math.isnan(v)), default=math.nan)
        for vs in zip(*columns, strict=True)
    ]


async def run(ctx: Context) -> ScenarioResult:
    total = ctx.size(100_000, 2_000)
    pythons, missing = await _interpreters(ctx)
    topic = await ctx.backlog("peers", total)
    runs: dict[str, list[Run | None]] = {job.label: [] for job in JOBS}
    for i in range(ctx.repeats):
        shift = i % len(JOBS)
        for job in JOBS[shift:] + JOBS[:shift]:
            if job.label in missing:
                runs[job.label].append(None)
                continue
            runs[job.label].append(await _measure(ctx, job, pythons[job.label], topic, total))

    rate = {label: _column(rs, lambda r: r.timing.rate) for label, rs in runs.items()}
    steady = {label: _column(rs, _steady_rate) for label, rs in runs.items()}
    cpu = {label: _column(rs, lambda r: r.cpu_us_per_sms) for label, rs in runs.items()}
    rss = {label: _column(rs, lambda r: r.rss_mib) for label, rs in runs.items()}
    figures: list[Figure] = []
    for label in (job.label for job in JOBS):
        figures += [
            Figure(f"{label}: SMS/s", "SMS/s", rate[label], note="spawn -> all committed"),
            Figure(
                f"{label}: SMS/s, start-up excluded",
                "SMS/s",
                steady[label],
                note="first commit -> all committed",
            ),
            Figure(
                f"{label}: CPU per SMS", "us", cpu[label], note="user + system, start-up included"
            ),
            Figure(f"{label}: peak RSS", "MiB", rss[label], note="VmHWM"),
        ]
    figures += [
        Figure(
            f"stream run / {peer}, SMS/s",
            "x",
            ratios(rate[OURS], rate[peer]),
            goal=(">=", RATE_GOAL),
        )
        for peer in PEERS
    ]
    figures += [
        Figure(f"stream run / {LOOP}, SMS/s", "x", ratios(rate[OURS], rate[LOOP])),
        Figure(
            "CPU per SMS, stream run / best peer",
            "x",
            ratios(cpu[OURS], _best([cpu[peer] for peer in PEERS])),
            goal=("<=", CPU_GOAL),
            note="best = lowest of Quix Streams and arroyo in the same repeat",
        ),
        Figure(
            f"stream run / {GETMANY}, SMS/s, start-up excluded",
            "x",
            ratios(steady[OURS], steady[GETMANY]),
            note="share of the consumer's physical limit reached",
        ),
    ]
    notes = [
        f"{total:,} SMS on 6 partitions, one topic for every job; each repeat runs the five "
        "jobs in turn, the order rotated by one per repeat.",
        "Quix Streams: app.dataframe(topic, bytes) -> apply(decode_sms + parse_sms) -> "
        "BatchingSink writing each partition's checkpoint batch with insert_many; "
        "commit_interval 1 s. arroyo: RunTask(decode_sms + parse_sms) -> BatchStep(500, "
        "50 ms) -> RunTask(insert_many) -> CommitOffsets, ONCE_PER_SECOND "
        "(bench/peers/).",
        "bare getmany: aiokafka getmany(500) -> commit, nothing else; hand-written loop: "
        "bench/baseline.py.",
        *(f"{label} not measured: {why}" for label, why in missing.items()),
    ]
    detail = {
        label: [
            None if r is None else {**vars(r.timing), "rss_mib": r.rss_mib, "cpu_s": r.cpu_s}
            for r in rs
        ]
        for label, rs in runs.items()
    }
    params = {"records": total, "partitions": 6, "jobs": [job.label for job in JOBS]}
    return ScenarioResult("peers", params, figures, notes, detail)
