"""status-cost: what the status reporter costs a member, as a share of the member's CPU.

Each repeat takes two figures back to back. First the whole cost of one report: a
`StatusReporter` runs alone in the bench process, reporting every 100 ms (a member's 24
assigned partitions), and the process's CPU time over the reports sent is sampling,
encoding, the producer's work and the wake-ups (`bench/status_cost.py`). Then one
`stream run` with default settings (a report every STREAM_STATUS_INTERVAL, 5 s) processes
SMS produced at RATE per second; its CPU time over the span from the first SMS produced to
the last committed gives its CPU use. The reporter's share is one report's cost per interval
over that CPU use; the goal is under 1 %. As a cross-check, the member's own status records
give the share it measured itself (sampling and encoding only: the send is awaited, so it is
not timed apart), between the first record read after the start and the last one.
"""

from __future__ import annotations

import asyncio
import math
import time

from bench.figures import Figure, ScenarioResult
from bench.harness import Context
from bench.status_cost import report_cost
from stream.adapters.status import read_statuses
from stream.config import Settings

__all__ = ["run"]

RATE = 2_000.0
"""SMS/s the member processes (--rate overrides it)."""
TIMEOUT_S = 300.0
FIRST_RECORD_AFTER_S = 3.0
"""When the first status record is read, once the member has published one under load."""


async def _member(ctx: Context, rate: float, seconds: float, seed: int) -> dict[str, float]:
    topic = await ctx.topic("status-cost")
    child = ctx.stream("status-cost", ctx.stream_env(topic))
    await child.wait_ready()
    settings = ctx.settings(topic)
    count = int(rate * seconds)
    started, cpu = time.monotonic(), child.cpu_seconds()
    producing = asyncio.create_task(ctx.produce(topic, count, seed=seed, rate=rate))
    await asyncio.sleep(FIRST_RECORD_AFTER_S)
    first = await read_statuses(settings)
    await producing
    await ctx.wait_committed(
        child.group, topic, count, since=started, children=[child], limit_s=TIMEOUT_S
    )
    elapsed, cpu = time.monotonic() - started, child.cpu_seconds() - cpu
    last = await read_statuses(settings)
    await child.stop()
    await ctx.expect_stored(child.collection, count)
    await ctx.drop(child.collection)
    sampled = math.nan
    for key, now in last.items():
        then = first.get(key)
        if then is not None and now["cpu_s"] > then["cpu_s"]:
            sampled = (now["reporter_cpu_s"] - then["reporter_cpu_s"]) / (
                now["cpu_s"] - then["cpu_s"]
            )
    return {"cpu_share": cpu / elapsed, "rate": count / elapsed, "sampled_share": sampled}


async def run(ctx: Context) -> ScenarioResult:
    rate = ctx.rate or ctx.size(RATE, 200.0)
    seconds = ctx.size(20.0, 4.0)
    interval = Settings().status_interval_s
    reports: list[tuple[float, int]] = []
    members: list[dict[str, float]] = []
    for i in range(ctx.repeats):
        reporting = ctx.settings(ctx.name("status-report"))
        reports.append(await report_cost(reporting, ctx.size(10.0, 2.0)))
        members.append(await _member(ctx, rate, seconds, seed=i + 1))
    shares = [
        per_report / interval / member["cpu_share"] * 100
        for (per_report, _), member in zip(reports, members, strict=True)
    ]
    figures = [
        Figure("one report: CPU", "ms", [per_report * 1e3 for per_report, _ in reports]),
        Figure("one report: size", "bytes", [float(size) for _, size in reports]),
        Figure("member: CPU", "% of a core", [m["cpu_share"] * 100 for m in members]),
        Figure("member: SMS/s", "SMS/s", [m["rate"] for m in members]),
        Figure(
            f"reporter / member CPU, a report every {interval:g} s",
            "%",
            shares,
            goal=("<", 1.0),
        ),
        Figure(
            "reporter / member CPU, measured in the member",
            "%",
            [m["sampled_share"] * 100 for m in members],
            note="sampling and encoding only",
        ),
    ]
    notes = [
        f"{rate:,.0f} SMS/s for {seconds:.0f} s into a fresh topic, one stream run with default "
        f"settings (STREAM_STATUS_INTERVAL {interval:g} s); one report's cost measured alone "
        "in the bench process, 100 ms apart, before each member run.",
    ]
    params = {"rate": rate, "seconds": seconds, "interval_s": interval}
    return ScenarioResult("status-cost", params, figures, notes, {"members": members})
