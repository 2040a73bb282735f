"""recovery: two consumers under a steady load, `kill -9` one, time until full rate again.

SMS are produced at a fixed rate (half of this run's pipeline SMS/s, or --rate) for the
whole scenario. The pre-kill rate is both members' `stream_sms_stored_total` over a few
seconds; after the kill the survivor's counter is read in 1 s windows, and the group has
recovered at the end of the first window at >= 90 % of the pre-kill rate. The killed
member's partitions wait for its session to time out (aiokafka's default
session_timeout_ms, 10 s) before the survivor is given them, so that bounds the figure.

Redelivered SMS (processed by the killed member, not committed, processed again by the
survivor) = records consumed by both - records produced, where the killed member's
`stream_records_consumed_total` is scraped just before the kill: batches it started in
the last milliseconds are missed, so the figure is a lower bound. Lost SMS must be zero:
MongoDB must hold exactly one document per SMS produced.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

from bench.figures import Figure, ScenarioResult
from bench.harness import BenchError, Context, StreamChild
from stream.tools.produce import Record, produce_records, synthetic_records

__all__ = ["run"]

RECOVERED_SHARE = 0.9
WINDOW_S = 1.0
TIMEOUT_S = 300.0


def _until(stop: asyncio.Event, seed: int) -> Iterator[Record]:
    """Synthetic SMS until `stop` is set."""
    for record in synthetic_records(random.Random(seed), count=100_000_000):
        if stop.is_set():
            return
        yield record


async def _stored(child: StreamChild) -> float:
    return (await child.metrics()).value("stream_sms_stored_total")


async def _one(
    ctx: Context, rate: float, warm: float, before: float, give_up: float, seed: int
) -> dict[str, Any]:
    topic = await ctx.topic("recovery")
    env = ctx.stream_env(topic)
    survivor = ctx.stream("recovery-survivor", Context.another_member(env))
    victim = ctx.stream("recovery-victim", Context.another_member(env))
    await survivor.wait_ready()
    await victim.wait_ready()
    stop = asyncio.Event()
    producer = asyncio.create_task(
        produce_records(ctx.settings(topic), _until(stop, seed), rate=rate)
    )
    try:
        await asyncio.sleep(warm)
        start_s, start_v, start_t = await _stored(survivor), await _stored(victim), time.monotonic()
        await asyncio.sleep(before)
        last_s = await _stored(survivor)
        victim_metrics = await victim.metrics()
        victim.kill()
        killed = last_t = time.monotonic()
        victim_stored = victim_metrics.value("stream_sms_stored_total") - start_v
        if min(last_s - start_s, victim_stored) <= 0:
            raise BenchError("recovery: a member stored nothing before the kill")
        pre_rate = (last_s - start_s + victim_stored) / (killed - start_t)
        recovered = None
        windows: list[float] = []
        while recovered is None:
            await asyncio.sleep(max(0.0, killed + WINDOW_S * (len(windows) + 1) - time.monotonic()))
            stored, now = await _stored(survivor), time.monotonic()
            windows.append((stored - last_s) / (now - last_t))
            last_s, last_t = stored, now
            if windows[-1] >= RECOVERED_SHARE * pre_rate:
                recovered = now - killed
            elif now - killed > give_up:
                raise BenchError(f"recovery: not back to full rate {give_up:.0f}s after the kill")
        await asyncio.sleep(2 * WINDOW_S)
    finally:
        stop.set()
        produced = await producer
    await ctx.wait_committed(
        env["STREAM_GROUP_ID"],
        topic,
        produced,
        since=time.monotonic(),
        children=[survivor],
        limit_s=TIMEOUT_S,
    )
    consumed = (await survivor.metrics()).value("stream_records_consumed_total")
    consumed += victim_metrics.value("stream_records_consumed_total")
    await survivor.stop()
    await ctx.expect_stored(env["STREAM_MONGO_COLLECTION"], produced)
    await ctx.drop(env["STREAM_MONGO_COLLECTION"])
    return {
        "recovery_s": recovered,
        "pre_kill_rate": pre_rate,
        "redelivered": consumed - produced,
        "produced": produced,
        "windows": windows,
    }


async def run(ctx: Context) -> ScenarioResult:
    rate, source = ctx.paced_rate()
    warm, before, give_up = ctx.size(5.0, 2.0), ctx.size(5.0, 3.0), ctx.size(60.0, 40.0)
    runs = [await _one(ctx, rate, warm, before, give_up, seed=i + 1) for i in range(ctx.repeats)]
    figures = [
        Figure(
            "kill -9 -> back to 90 % of pre-kill rate",
            "s",
            [r["recovery_s"] for r in runs],
            note="1 s windows; session timeout 10 s",
        ),
        Figure("pre-kill aggregate rate", "SMS/s", [r["pre_kill_rate"] for r in runs], note=source),
        Figure(
            "redelivered SMS",
            "SMS",
            [r["redelivered"] for r in runs],
            note="consumed by both - produced; lower bound",
        ),
        Figure("lost SMS", "SMS", [0.0 for _ in runs], note="checked: 1 document per SMS"),
    ]
    notes = [
        f"Two members of one group on a fresh 6-partition topic, SMS produced at {rate:,.0f}/s "
        f"({source}) throughout; {warm:.0f} s warm-up, {before:.0f} s pre-kill window, "
        "SIGKILL to one member. Lost SMS: MongoDB checked to hold exactly one document per "
        "SMS produced (the run fails otherwise).",
    ]
    params = {"rate": rate, "rate_source": source, "warm_up_s": warm, "pre_kill_s": before}
    return ScenarioResult("recovery", params, figures, notes, {"runs": runs})
