"""pipeline: `stream run` end to end against a hand-written loop doing the same I/O.

Both run as child processes on the same pre-produced backlog (a new consumer group and
collection per run), in alternating order (ABBA) so drift hits both alike. A run is timed
from spawn until the group's committed offsets reach the end of the topic: start-up is
included, and reported on its own as spawn -> first commit. Peak RSS is VmHWM read just
before the stop; `stream run` is also measured on a smaller backlog, because memory must
not grow with the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from dataclasses import dataclass

from bench.figures import Figure, Metrics, ScenarioResult, ratios
from bench.harness import Child, Context, Timing

__all__ = ["run"]

TIMEOUT_S = 600.0
RSS_SAMPLE_S = 0.25


@dataclass(frozen=True)
class Run:
    """One timed run, its peak RSS and the CPU time it used."""

    timing: Timing
    rss_mib: float
    cpu_s: float

    @property
    def cpu_us_per_sms(self) -> float:
        return self.cpu_s / self.timing.total * 1e6


async def _measure(ctx: Context, child: Child, group: str, topic: str, total: int) -> Run:
    """Wait until `group` committed all of `topic`; read the peak RSS while it still runs."""
    timing = await ctx.wait_committed(
        group, topic, total, since=child.started, children=[child], limit_s=TIMEOUT_S
    )
    return Run(timing, child.peak_rss_mib(), child.cpu_seconds())


async def _finish(ctx: Context, child: Child, collection: str, total: int) -> None:
    """Stop the child, check every SMS was stored exactly once, drop the collection."""
    await child.stop()
    await ctx.expect_stored(collection, total)
    await ctx.drop(collection)


def diagnostics(metrics: Metrics, run: Run) -> dict[str, float]:
    """Where a `stream run`'s time went, from its own metrics."""
    writes = metrics.value("stream_mongo_write_seconds_count")
    return {
        "mean_batch": metrics.mean("stream_batch_size"),
        "mongo_writes": writes,
        "mean_write_ms": metrics.mean("stream_mongo_write_seconds") * 1000,
        "write_occupancy": metrics.value("stream_mongo_write_seconds_sum")
        / max(run.timing.seconds - run.timing.startup, 1e-9),
        "commits_per_1000": metrics.value("stream_commits_total") / run.timing.total * 1000,
        "mean_cycle_ms": metrics.mean("stream_batch_cycle_seconds") * 1000,
    }


async def _sample_rss(child: Child, samples: list[tuple[float, float]]) -> None:
    """Append (time, VmRSS) every RSS_SAMPLE_S until cancelled or the process is gone."""
    with contextlib.suppress(OSError):
        while True:
            samples.append((time.monotonic(), child.rss_mib()))
            await asyncio.sleep(RSS_SAMPLE_S)


def _growth(samples: list[tuple[float, float]]) -> float:
    """Peak RSS in the second half of the run / in the first half: ~1 when flat."""
    middle = (samples[0][0] + samples[-1][0]) / 2
    first = max(rss for t, rss in samples if t <= middle)
    return max((rss for t, rss in samples if t > middle), default=first) / first


async def ours(ctx: Context, topic: str, total: int) -> tuple[Run, dict[str, float]]:
    """`stream run` with default settings on `topic`; the run and its diagnostics."""
    child = ctx.stream("pipeline-stream", ctx.stream_env(topic))
    samples: list[tuple[float, float]] = []
    sampler = asyncio.create_task(_sample_rss(child, samples))
    try:
        measured = await _measure(ctx, child, child.group, topic, total)
    finally:
        sampler.cancel()
    metrics = await child.metrics()
    await _finish(ctx, child, child.collection, total)
    return measured, diagnostics(metrics, measured) | {"rss_growth": _growth(samples)}


async def baseline(ctx: Context, topic: str, total: int) -> Run:
    """The hand-written loop (bench/baseline.py) on `topic`, timed the same way."""
    name = ctx.name("baseline")
    argv = [sys.executable, "-m", "bench.baseline", ctx.endpoints.kafka_bootstrap, topic, name]
    argv += [ctx.endpoints.mongo_url, ctx.db, name]
    child = ctx.spawn("pipeline-baseline", argv, ctx.stream_env(topic))
    measured = await _measure(ctx, child, name, topic, total)
    await _finish(ctx, child, name, total)
    return measured


def _detail(run: Run) -> dict[str, float]:
    return {**vars(run.timing), "rss_mib": run.rss_mib, "cpu_s": run.cpu_s}


async def run(ctx: Context) -> ScenarioResult:
    big, small = ctx.size(100_000, 3_000), ctx.size(30_000, 1_000)
    big_topic = await ctx.backlog("pipeline", big)
    small_topic = await ctx.backlog("pipeline-small", small)
    stream_runs: list[Run] = []
    base_runs: list[Run] = []
    small_runs: list[Run] = []
    diags: list[dict[str, float]] = []
    for i in range(ctx.repeats):
        if i % 2:
            base_runs.append(await baseline(ctx, big_topic, big))
        measured, diag = await ours(ctx, big_topic, big)
        stream_runs.append(measured)
        diags.append(diag)
        if not i % 2:
            base_runs.append(await baseline(ctx, big_topic, big))
        small_runs.append((await ours(ctx, small_topic, small))[0])

    ours_t = [r.timing for r in stream_runs]
    base_t = [r.timing for r in base_runs]
    ctx.pipeline_rate = statistics.median(t.rate for t in ours_t)
    rates, base_rates = [t.rate for t in ours_t], [t.rate for t in base_t]
    figures = [
        Figure(f"stream run, {big:,} SMS", "SMS/s", rates, note="spawn -> all committed"),
        Figure(f"baseline loop, {big:,} SMS", "SMS/s", base_rates, note="same I/O, sequential"),
        Figure("stream run / baseline", "x", ratios(rates, base_rates), goal=(">=", 0.8)),
        Figure(
            "stream run / baseline, start-up excluded",
            "x",
            ratios([t.processing_rate for t in ours_t], [t.processing_rate for t in base_t]),
            note="after each one's first commit",
        ),
        Figure(
            "start-up stream run", "s", [t.startup for t in ours_t], note="spawn -> first commit"
        ),
        Figure("start-up baseline", "s", [t.startup for t in base_t], note="spawn -> first commit"),
        Figure(
            "CPU per SMS, stream run",
            "us",
            [r.cpu_us_per_sms for r in stream_runs],
            note="user + system, start-up included",
        ),
        Figure("CPU per SMS, baseline", "us", [r.cpu_us_per_sms for r in base_runs]),
        Figure(
            "CPU per SMS, stream run / baseline",
            "x",
            ratios([r.cpu_us_per_sms for r in stream_runs], [r.cpu_us_per_sms for r in base_runs]),
            note="our per-record overhead",
        ),
        Figure(
            f"peak RSS stream run, {big:,} SMS",
            "MiB",
            [r.rss_mib for r in stream_runs],
            goal=("<", 300),
            note="VmHWM",
        ),
        Figure(
            f"RSS stream run, {big:,} SMS: 2nd half / 1st half",
            "x",
            [d["rss_growth"] for d in diags],
            note="peak VmRSS of each half of the run, sampled every 0.25 s; ~1 = flat",
        ),
        Figure(
            f"peak RSS stream run, {small:,} SMS",
            "MiB",
            [r.rss_mib for r in small_runs],
            note=f"backlog {big / small:.1f}x smaller than the row above",
        ),
        Figure(
            f"peak RSS baseline, {big:,} SMS",
            "MiB",
            [r.rss_mib for r in base_runs],
            note="the libraries' floor",
        ),
    ]
    medians = {key: statistics.median(d[key] for d in diags) for key in diags[0]}
    notes = [
        "SMS/s = records / (spawn -> the group's committed offsets reach the end), nothing "
        "excluded; committed offsets polled every 50 ms; runs alternate (ABBA).",
        "baseline: one process, sequential getmany(500) -> orjson.loads -> parse_sms -> "
        "insert_many(ordered=False) -> commit, same document and write concern "
        "(bench/baseline.py).",
        f"stream run diagnostics (medians): mean batch {medians['mean_batch']:.0f} records, "
        f"{medians['mongo_writes']:.0f} bulk writes of {medians['mean_write_ms']:.0f} ms mean, "
        f"write occupancy {medians['write_occupancy']:.2f} (write time summed over "
        f"overlapping writes / processing time), {medians['commits_per_1000']:.1f} commits "
        f"per 1,000 SMS, mean batch cycle {medians['mean_cycle_ms']:.0f} ms.",
    ]
    detail = {
        "stream": [_detail(r) for r in stream_runs],
        "baseline": [_detail(r) for r in base_runs],
        "stream_small": [_detail(r) for r in small_runs],
        "stream_diagnostics": diags,
    }
    params = {"records": big, "records_small": small, "partitions": 6, "processor": "builtin"}
    return ScenarioResult("pipeline", params, figures, notes, detail)
