"""latency: the delay from produce to stored, at a fixed rate one `stream run` keeps up with.

The rate is half of this run's pipeline SMS/s (or --rate). Exact method, per SMS: the
Kafka record timestamp (CreateTime, stamped by the producer when `send` is called, so the
producer's linger is included) against the document's `processed_at` (stamped by the
pipeline once the batch is processed, just before its bulk write; BSON dates have ms
precision). The bulk write that follows is added back as a separate figure (its mean, from
`stream_mongo_write_seconds`), and the process's own produce->stored histogram gives an
interpolated p99 that includes it, as a cross-check.
"""

from __future__ import annotations

import time

from bench.figures import Figure, ScenarioResult, percentile
from bench.harness import Context

__all__ = ["run"]

TIMEOUT_S = 300.0
QUANTILES = (0.5, 0.95, 0.99)


async def _one(ctx: Context, rate: float, seconds: float, seed: int) -> dict[str, float]:
    topic = await ctx.topic("latency")
    child = ctx.stream("latency", ctx.stream_env(topic))
    await child.wait_ready()
    before = await child.metrics()
    count = int(rate * seconds)
    started = time.monotonic()
    await ctx.produce(topic, count, seed=seed, rate=rate)
    produced_in = time.monotonic() - started
    await ctx.wait_committed(
        child.group, topic, count, since=started, children=[child], limit_s=TIMEOUT_S
    )
    delta = (await child.metrics()).minus(before)
    await child.stop()
    await ctx.expect_stored(child.collection, count)
    delays = await ctx.delays_ms(topic, child.collection)
    await ctx.drop(child.collection)
    return {
        **{f"p{round(q * 100)}_ms": percentile(delays, q) for q in QUANTILES},
        "max_ms": max(delays),
        "write_ms": delta.mean("stream_mongo_write_seconds") * 1000,
        "histogram_p99_ms": delta.quantile("stream_end_to_end_delay_seconds", 0.99) * 1000,
        "achieved_rate": count / produced_in,
    }


async def run(ctx: Context) -> ScenarioResult:
    rate, source = ctx.paced_rate()
    seconds = ctx.size(15.0, 4.0)
    runs = [await _one(ctx, rate, seconds, seed=i + 1) for i in range(ctx.repeats)]

    def values(key: str) -> list[float]:
        return [r[key] for r in runs]

    figures = [
        Figure(f"p{round(q * 100)} produce -> processed", "ms", values(f"p{round(q * 100)}_ms"))
        for q in QUANTILES
    ]
    figures += [
        Figure("mean bulk write after processed_at", "ms", values("write_ms")),
        Figure(
            "p99 produce -> stored (histogram)",
            "ms",
            values("histogram_p99_ms"),
            note="linear within coarse buckets (0.1, 0.25, 0.5 s): a rough upper side",
        ),
        Figure("achieved produce rate", "SMS/s", values("achieved_rate"), note=source),
    ]
    notes = [
        f"{rate:,.0f} SMS/s ({source}) for {seconds:.0f} s into a fresh topic, one stream "
        "run with default settings, already joined. Exact per SMS: document processed_at - "
        "Kafka CreateTime (stamped at send; includes the producer's 10 ms linger, the "
        "50 ms batch wait and the processing); add the bulk write's mean for stored.",
    ]
    params = {"rate": rate, "rate_source": source, "seconds": seconds}
    return ScenarioResult("latency", params, figures, notes, {"runs": runs})
