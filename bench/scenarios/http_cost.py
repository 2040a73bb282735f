"""http-cost: CPU per HTTP-processed SMS through `stream run`, for each HTTP client.

Against a fast reference upstream (no latency, no limit: the API costs nothing but its
own process, which is not counted), `stream run` with STREAM_PROCESSOR=http consumes a
backlog, once per client in each repeat: the frozen hand-written client (`bench/
frozen_run.py`, the baseline), today's h11-based client (STREAM_HTTP_CLIENT=own) and the
httpx backend (STREAM_HTTP_CLIENT=httpx). CPU per SMS is taken between 20 % and 100 %
committed, so start-up and the limiter's slow start are left out. The goal: the h11-based
client costs at most 1.5x the baseline per SMS.
"""

from __future__ import annotations

import asyncio
import sys
import time

from bench.figures import Figure, ScenarioResult, ratios
from bench.harness import BenchError, Context, StreamChild, UpstreamChild

__all__ = ["run"]

TIMEOUT_S = 600.0
POLL_S = 0.1
FROM_SHARE = 0.2
HTTP_SETTINGS = {"STREAM_PROCESSOR": "http", "STREAM_LIMIT_MAX": "64"}
"""64 calls in flight at most."""
CLIENTS = ("baseline", "own", "httpx")
"""The order of each repeat's runs (rotated by one per repeat, so none always goes first)."""


def _child(ctx: Context, client: str, env: dict[str, str]) -> StreamChild:
    if client == "baseline":
        argv = [sys.executable, "-m", "bench.frozen_run"]
        return ctx.spawn_stream_like("http-cost-baseline", argv, env)
    return ctx.stream(f"http-cost-{client}", env | {"STREAM_HTTP_CLIENT": client})


async def _measure(
    ctx: Context, upstream: UpstreamChild, topic: str, total: int, client: str
) -> dict[str, float]:
    env = ctx.stream_env(topic, STREAM_API_URL=upstream.url, **HTTP_SETTINGS)
    child = _child(ctx, client, env)
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
            raise BenchError(f"http-cost {client}: {done} of {total} committed after {TIMEOUT_S}s")
        await asyncio.sleep(POLL_S)
    await child.stop()
    await ctx.expect_stored(child.collection, total)
    await ctx.drop(child.collection)
    return {"cpu_us": cpu / counted * 1e6, "rate": counted / (now - mark[0])}


async def run(ctx: Context) -> ScenarioResult:
    total = ctx.size(20_000, 1_000)
    topic = await ctx.backlog("http-cost", total)
    upstream = await ctx.upstream("upstream-fast", [])
    measured: dict[str, list[dict[str, float]]] = {client: [] for client in CLIENTS}
    for i in range(ctx.repeats):
        for client in CLIENTS[i % 3 :] + CLIENTS[: i % 3]:
            measured[client].append(await _measure(ctx, upstream, topic, total, client))
    cpu = {client: [m["cpu_us"] for m in runs] for client, runs in measured.items()}
    figures = [
        Figure("stream run, frozen baseline client: CPU per SMS", "µs", cpu["baseline"]),
        Figure("stream run, own (h11) client: CPU per SMS", "µs", cpu["own"]),
        Figure("stream run, httpx backend: CPU per SMS", "µs", cpu["httpx"]),
        Figure("own (h11) / baseline", "x", ratios(cpu["own"], cpu["baseline"]), goal=("<=", 1.5)),
        Figure("httpx backend / baseline", "x", ratios(cpu["httpx"], cpu["baseline"])),
        *(
            Figure(f"stream run, {client} client", "SMS/s", [m["rate"] for m in runs])
            for client, runs in measured.items()
        ),
    ]
    notes = [
        "fast reference upstream (no latency, no limit) in its own process; "
        f"STREAM_LIMIT_MAX 64; {total:,} SMS per run; counted from 20 % committed.",
        "baseline: the hand-written client the h11-based one replaced "
        "(bench/frozen_httpclient.py).",
    ]
    return ScenarioResult("http-cost", {"sms": total}, figures, notes, measured)
