"""batch-sweep: fixed STREAM_BATCH_MAX from 1 to 2000 beside the adaptive default.

Fixed runs use STREAM_BATCH_MODE=fixed (a batch gathers up to its size or the wait);
the adaptive run is the default setting (group commit, capped at STREAM_BATCH_MAX 500).
The goal: its backlog SMS/s no worse than the best fixed size's, its p99 no worse than the
best fixed size's for latency.

Each run has two phases on a fresh topic. First a backlog: SMS/s from the group joined
(/readyz) to the last commit, start-up excluded, so the batch size is what differs. Then,
once the backlog is done, SMS produced at a fixed rate for a few seconds, and the exact
per-SMS delay of those (Kafka CreateTime -> the document's processed_at, as in `latency`;
the collection is dropped between the phases so it holds only them). A delay under a
backlog would only measure the queue, hence the paced phase; it is skipped for a batch size
whose backlog rate is below the paced rate, as its delay would only grow with the run.
Batch 1 gets a smaller backlog, since it is slow.
"""

from __future__ import annotations

import math
import time

from bench.figures import Figure, ScenarioResult, fmt, percentile, ratios
from bench.harness import Context

__all__ = ["run"]

SIZES = (1, 10, 100, 500, 2000)
ADAPTIVE = 0
"""The adaptive run's key among the sizes: batches follow the load, up to 500."""
RUNS = (*SIZES, ADAPTIVE)
DEFAULT = ADAPTIVE
TIMEOUT_S = 300.0


async def _one(ctx: Context, size: int, backlog: int, rate: float, paced: int) -> dict[str, float]:
    """Backlog SMS/s, then the delay at `rate` (NaN when the backlog rate is below it: the
    delay of a consumer that cannot keep up only says how long the run was)."""
    label = "adaptive" if size == ADAPTIVE else str(size)
    topic = await ctx.backlog(f"sweep-{label}", backlog)
    fixed = {"STREAM_BATCH_MAX": str(size), "STREAM_BATCH_MODE": "fixed"}
    if size == ADAPTIVE:
        fixed = {}
    child = ctx.stream(f"sweep-{label}", ctx.stream_env(topic, **fixed))
    joined = child.started + await child.wait_ready()
    timing = await ctx.wait_committed(
        child.group, topic, backlog, since=joined, children=[child], limit_s=TIMEOUT_S
    )
    await ctx.expect_stored(child.collection, backlog)
    result = {"rate": timing.rate, "p50_ms": math.nan, "p99_ms": math.nan}
    if timing.rate >= rate:
        await ctx.drop(child.collection)  # the next write creates it again, paced SMS only
        started = time.monotonic()
        await ctx.produce(topic, paced, seed=2, rate=rate)
        await ctx.wait_committed(
            child.group, topic, backlog + paced, since=started, children=[child], limit_s=TIMEOUT_S
        )
        await ctx.expect_stored(child.collection, paced)
        delays = await ctx.delays_ms(topic, child.collection)
        result["p50_ms"], result["p99_ms"] = percentile(delays, 0.5), percentile(delays, 0.99)
    await child.stop()
    await ctx.drop(child.collection)
    return result


async def run(ctx: Context) -> ScenarioResult:
    backlog, backlog_1 = ctx.size(20_000, 1_000), ctx.size(3_000, 200)
    rate, rate_source = ctx.paced_rate()
    seconds = ctx.size(3, 2)
    paced = int(rate * seconds)
    runs: dict[int, list[dict[str, float]]] = {size: [] for size in RUNS}
    for i in range(ctx.repeats):
        order = RUNS[i % len(RUNS) :] + RUNS[: i % len(RUNS)]  # rotate against drift
        for size in order:
            runs[size].append(
                await _one(ctx, size, backlog_1 if size == 1 else backlog, rate, paced)
            )
    figures: list[Figure] = []
    notes = [
        f"SMS/s: backlog of {backlog:,} SMS ({backlog_1:,} for batch 1), from the group "
        "joined (/readyz) to the last commit. Delay: Kafka CreateTime -> processed_at of "
        f"{paced:,} SMS paced at {rate:,.0f}/s ({rate_source}) after the backlog, exact per "
        "SMS (the bulk write that follows is not included; see latency).",
        "STREAM_BATCH_WAIT_MS stays 50: at a paced rate a fixed batch closes on time, not "
        "size; an adaptive one closes when the batches before it are done.",
    ]
    default_rates = [r["rate"] for r in runs[DEFAULT]]
    default_p99 = [r["p99_ms"] for r in runs[DEFAULT]]
    for size in RUNS:
        rates = [r["rate"] for r in runs[size]]
        label = "adaptive (default)" if size == ADAPTIVE else f"fixed batch {size}"
        figures.append(Figure(f"{label}: SMS/s", "SMS/s", rates))
        if size != DEFAULT:
            figures.append(
                Figure(f"adaptive vs {label}: SMS/s", "x", ratios(default_rates, rates))
            )
            figures.append(
                Figure(
                    f"adaptive vs {label}: p99 (below 1 is better)",
                    "x",
                    ratios(default_p99, [r["p99_ms"] for r in runs[size]]),
                )
            )
        figures.append(
            Figure(
                f"{label}: p99 produce -> processed at {rate:,.0f}/s",
                "ms",
                [r["p99_ms"] for r in runs[size]],
            )
        )
        if min(rates) < rate:
            notes.append(
                f"{label}: {fmt(min(rates))} SMS/s at worst, below the paced "
                f"{rate:,.0f}/s; no delay measured in such a run (a queue that grows "
                "without bound has no steady-state delay)."
            )
    params = {"sizes": SIZES, "backlog": backlog, "backlog_batch_1": backlog_1, "rate": rate}
    detail = {("adaptive" if size == ADAPTIVE else str(size)): runs[size] for size in RUNS}
    return ScenarioResult("batch-sweep", params, figures, notes, detail)
