"""http-cost: CPU per HTTP-processed SMS through `stream run`, against a bare httpx loop.

Against a fast reference upstream (no latency, no limit: the API costs nothing but its
own process, which is not counted), `stream run` with STREAM_PROCESSOR=http consumes a
backlog; its CPU per SMS is taken between 20 % and 100 % committed, so start-up and the
limiter's slow start are left out. In the same repeat, `bench/http_loop.py` POSTs as many
SMS with 64 workers sharing one httpx client (its CPU counted from after a warm-up): what a
call costs with the library alone. The ratio is the figure; its goal is 0.25, half of the
0.50 an httpx-based client measured (1,040 µs per SMS against 2,100 µs per bare call).
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

from bench.figures import Figure, ScenarioResult, ratios
from bench.harness import BenchError, Context, StreamChild, UpstreamChild

__all__ = ["run"]

TIMEOUT_S = 600.0
POLL_S = 0.1
FROM_SHARE = 0.2
HTTP_SETTINGS = {"STREAM_PROCESSOR": "http", "STREAM_LIMIT_MAX": "64"}
"""64 calls in flight, as the bare loop's 64 workers."""


async def _ours(ctx: Context, upstream: UpstreamChild, topic: str, total: int) -> dict[str, float]:
    child: StreamChild = ctx.stream(
        "http-cost", ctx.stream_env(topic, STREAM_API_URL=upstream.url, **HTTP_SETTINGS)
    )
    mark: tuple[float, float, int] | None = None
    while True:
        done = await ctx.committed(child.group, topic)
        now = time.monotonic()
        if mark is None and done >= FROM_SHARE * total:
            mark = (now, child.cpu_seconds(), done)
        if done >= total and mark is not None:
            cpu = child.cpu_seconds() - mark[1]
            counted = done - mark[2]
            break
        child.check_alive()
        if now - child.started > TIMEOUT_S:
            raise BenchError(f"http-cost: {done} of {total} committed after {TIMEOUT_S:.0f}s")
        await asyncio.sleep(POLL_S)
    await child.stop()
    await ctx.expect_stored(child.collection, total)
    await ctx.drop(child.collection)
    return {"cpu_us": cpu / counted * 1e6, "rate": counted / (now - mark[0])}


async def _bare(ctx: Context, upstream: UpstreamChild, count: int) -> dict[str, float]:
    argv = [sys.executable, "-m", "bench.http_loop", upstream.url, str(count)]
    child = ctx.spawn("http-loop", argv, ctx.stream_env("unused"))
    if await asyncio.to_thread(child.proc.wait) != 0:
        raise BenchError(f"http loop failed\n{child.log_tail()}")
    measured = orjson.loads(child.log_path.read_text().strip().splitlines()[-1])
    return {
        "cpu_us": measured["cpu_s"] / measured["calls"] * 1e6,
        "rate": measured["calls"] / measured["seconds"],
    }


async def run(ctx: Context) -> ScenarioResult:
    total = ctx.size(20_000, 1_000)
    topic = await ctx.backlog("http-cost", total)
    upstream = await ctx.upstream("upstream-fast", [])
    ours: list[dict[str, float]] = []
    bare: list[dict[str, float]] = []
    for i in range(ctx.repeats):
        if i % 2:
            bare.append(await _bare(ctx, upstream, total))
        ours.append(await _ours(ctx, upstream, topic, total))
        if not i % 2:
            bare.append(await _bare(ctx, upstream, total))
    ours_cpu, bare_cpu = [o["cpu_us"] for o in ours], [b["cpu_us"] for b in bare]
    figures = [
        Figure("stream run, http processor: CPU per SMS", "µs", ours_cpu, note="20-100 %"),
        Figure("stream run, http processor", "SMS/s", [o["rate"] for o in ours]),
        Figure("bare httpx loop, 64 workers: CPU per call", "µs", bare_cpu),
        Figure("bare httpx loop", "calls/s", [b["rate"] for b in bare]),
        Figure(
            "stream run CPU per SMS / bare httpx call",
            "x",
            ratios(ours_cpu, bare_cpu),
            goal=("<=", 0.25),
        ),
    ]
    notes = [
        "fast reference upstream (no latency, no limit) in its own process; "
        f"STREAM_LIMIT_MAX 64; {total:,} SMS per run; stream run counted from 20 % committed.",
        "an httpx-based client: 1,040 µs per SMS against 2,100 µs per bare call "
        "(0.50); the goal is half of that ratio.",
    ]
    return ScenarioResult("http-cost", {"sms": total}, figures, notes, {"ours": ours, "bare": bare})
