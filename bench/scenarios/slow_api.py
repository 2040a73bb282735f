"""slow-api: the http processor against a slow and a rate-limited reference upstream.

Slow: latency lognormal (median 4.4 s, sigma 0.3), at most 64 requests in progress (503
beyond). `stream run` (STREAM_PROCESSOR=http, STREAM_LIMIT_MAX=256) and the old way (one
call at a time, a fixed 3 s sleep between calls) run at the same time for the same wall
time, each against its own upstream process with the same flags and seed, so neither
takes the other's capacity. Successes are the upstream's `accepted` count for ours, 200
answers for the old way; `stream run`'s window starts at its spawn, start-up included.

Rate-limited: 200 requests/s (429 with Retry-After beyond, burst 20), 20 ms latency.
Goodput and the 429 share come from the upstream's per-second history over a window
after a warm-up, so the limiter's slow start is not counted against it.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
import orjson

from bench.figures import Figure, ScenarioResult, ratios
from bench.harness import Context, StreamChild, UpstreamChild
from stream.tools.synthetic import synthetic_sms

__all__ = ["run"]

SLOW_FLAGS = ["--latency-median", "4.4", "--latency-sigma", "0.3", "--max-concurrency", "64"]
OLD_WAY_SLEEP_S = 3.0
OLD_WAY_TIMEOUT_S = 30.0
RATE = 200.0
RATE_FLAGS = ["--rate", str(RATE), "--latency", "0.02"]
SEED = ["--seed", "7"]
STEADY_TAIL_S = 20.0
"""The end of the window, past the limiter's slow start (4 -> 64 takes ~4 round trips)."""
HTTP_SETTINGS = {
    "STREAM_PROCESSOR": "http",
    "STREAM_LIMIT_MAX": "256",
    "STREAM_DRAIN_TIMEOUT_MS": "1000",
}
"""STREAM_DRAIN_TIMEOUT_MS 1 s: the figures are read before the stop, and a 4.4 s call in
flight need not hold the stop up."""


async def old_way(url: str, seconds: float, seed: int) -> int:
    """One call at a time with a fixed sleep between calls; 200 answers within `seconds`."""
    successes = 0
    sms = synthetic_sms(random.Random(seed), count=1_000_000)
    async with httpx.AsyncClient(timeout=OLD_WAY_TIMEOUT_S, trust_env=False) as client:
        try:
            async with asyncio.timeout(seconds):
                while True:
                    try:
                        response = await client.post(url, content=orjson.dumps(next(sms)))
                    except httpx.TransportError:  # a failed call, as the old system logged it
                        pass
                    else:
                        successes += response.status_code == 200
                    await asyncio.sleep(OLD_WAY_SLEEP_S)
        except TimeoutError:
            return successes


async def _wait_until(child: StreamChild, seconds: float) -> None:
    """Sleep until `seconds` after the child's spawn, failing early if it dies."""
    while (left := child.started + seconds - time.monotonic()) > 0:
        child.check_alive()
        await asyncio.sleep(min(left, 1.0))


async def _slow(
    ctx: Context, ours_up: UpstreamChild, old_up: UpstreamChild, seconds: float, seed: int
) -> dict[str, float]:
    """Successes/s of stream run (whole window and its steady tail) and of the old way."""
    topic = await ctx.backlog("slow-api", ctx.size(3_000, 500), seed=seed)
    await ours_up.reset()
    env = ctx.stream_env(topic, STREAM_API_URL=ours_up.url, **HTTP_SETTINGS)
    child = ctx.stream("slow-api", env)
    old = asyncio.create_task(old_way(old_up.url, seconds, seed))
    await _wait_until(child, seconds)
    stats = await ours_up.stats()
    limit = (await child.metrics()).value("stream_limiter_limit")
    old_successes = await old
    await child.stop(drain_may_time_out=True)
    tail = min(STEADY_TAIL_S, seconds / 2)
    steady, _, _ = _window(stats["history"], seconds - tail, tail)
    return {
        "ours": stats["accepted"] / seconds,
        "ours_steady": steady / tail,
        "old": old_successes / seconds,
        "limit": limit,
        "rejected_503": stats["rejected_503"],
    }


def _window(history: list[dict[str, Any]], start: float, length: float) -> tuple[int, int, int]:
    """(accepted, 429s, all requests) in the seconds [start, start + length) of the history."""
    seconds = [h for h in history if start <= h["t"] < start + length]
    ok = sum(h.get("ok", 0) for h in seconds)
    limited = sum(h.get("429", 0) for h in seconds)
    total = sum(v for h in seconds for k, v in h.items() if k != "t")
    return ok, limited, total


async def _limited(
    ctx: Context, upstream: UpstreamChild, warm: float, window: float, seed: int
) -> tuple[float, float]:
    """(goodput / RATE, share of requests answered 429) over the window."""
    topic = await ctx.backlog("rate-api", ctx.size(int(RATE * 45), 3_000), seed=seed)
    await upstream.reset()
    child = ctx.stream(
        "rate-api", ctx.stream_env(topic, STREAM_API_URL=upstream.url, **HTTP_SETTINGS)
    )
    await _wait_until(child, warm + window + 1.0)  # + 1 s: the last second is complete
    ok, limited, total = _window((await upstream.stats())["history"], warm, window)
    await child.stop(drain_may_time_out=True)
    return ok / window / RATE, limited / total if total else 0.0


async def run(ctx: Context) -> ScenarioResult:
    seconds = ctx.size(60.0, 10.0)
    warm, window = ctx.size(8.0, 3.0), ctx.size(15.0, 5.0)
    ours_up = await ctx.upstream("upstream-slow", [*SLOW_FLAGS, *SEED])
    old_up = await ctx.upstream("upstream-slow-old", [*SLOW_FLAGS, *SEED])
    rate_up = await ctx.upstream("upstream-rate", [*RATE_FLAGS, *SEED])
    slow: list[dict[str, float]] = []
    limited: list[tuple[float, float]] = []
    for i in range(ctx.repeats):
        slow.append(await _slow(ctx, ours_up, old_up, seconds, seed=i + 1))
        limited.append(await _limited(ctx, rate_up, warm, window, seed=i + 1))
    ours = [s["ours"] for s in slow]
    steady = [s["ours_steady"] for s in slow]
    old = [s["old"] for s in slow]
    tail = min(STEADY_TAIL_S, seconds / 2)
    figures = [
        Figure(f"slow API, stream run, {seconds:.0f} s", "ok/s", ours, note="start-up included"),
        Figure(f"slow API, old way, {seconds:.0f} s", "ok/s", old, note="1 call, then 3 s sleep"),
        Figure("slow API, stream run / old way", "x", ratios(ours, old)),
        Figure(f"slow API, stream run, last {tail:.0f} s", "ok/s", steady, note="after slow start"),
        Figure(
            f"rate-limited {RATE:.0f}/s: goodput / R",
            "x",
            [g for g, _ in limited],
            note=f"{window:.0f} s window after {warm:.0f} s warm-up",
        ),
        Figure(
            f"rate-limited {RATE:.0f}/s: 429 share",
            "%",
            [share * 100 for _, share in limited],
            note="429s / all requests in the window",
        ),
    ]
    notes = [
        "slow API: lognormal latency, median 4.4 s, sigma 0.3, max 64 in progress (503 "
        "beyond); STREAM_LIMIT_MAX 256. The old way is bound to ~1/(4.4 + 3) calls/s by "
        "construction; stream run by the 64-request cap / 4.4 s, less the limiter's slow "
        "start from 4 (one doubling per 4.4 s round trip) inside the window.",
        "limiter's limit at the end of the slow runs: "
        f"{[round(s['limit']) for s in slow]}; 503s from the cap: "
        f"{[round(s['rejected_503']) for s in slow]}.",
        "rate-limited: 200/s token bucket (burst 20), 20 ms latency; goodput = accepted/s "
        "in the window from the upstream's own per-second counts.",
    ]
    params = {"slow_seconds": seconds, "warm_up_s": warm, "window_s": window, "rate": RATE}
    detail = {"slow": slow, "rate_limited": limited}
    return ScenarioResult("slow-api", params, figures, notes, detail)
