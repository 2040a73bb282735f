"""`stream demo`: the whole job end to end on the local stack, in one command.

Brings the stack up, produces synthetic SMS (with some malformed and duplicated ones),
runs one consumer until every record is settled, then prints what landed in MongoDB, what
went to the dead-letter topic and what the metrics say. Every run uses fresh topic and
collection names, so it can be repeated; the stack stays up (`stream stack down` stops it).
With `--http` the SMS go through the HTTP processor to the reference upstream, rate-limited,
so the adaptive limiter has something to find.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY, CollectorRegistry
from pymongo import AsyncMongoClient

from stream.adapters.kafka import client_options
from stream.adapters.topics import ensure_topics
from stream.app import serve
from stream.config import Settings
from stream.devkit.stack import ensure_up
from stream.devkit.stack.process import free_port
from stream.devkit.upstream import ReferenceUpstream, UpstreamBehaviour
from stream.observability import logs
from stream.observability.logs import mask
from stream.tools.dlq import dlq_entries
from stream.tools.produce import produce_records, synthetic_records

__all__ = ["Progress", "goodput_line", "main", "processed_records"]

HTTP_DEMO_UPSTREAM = UpstreamBehaviour(
    latency_median=0.25, latency_sigma=0.5, latency_max=3.0, rate=300.0, error_rate=0.01
)
"""A slow, rate-limited API with a few errors: the limiter must find ~300/s by itself."""
HTTP_DEMO_COUNT = 15_000
"""SMS for `--http` by default: about 50 s at 300/s, so the rate after the limiter's
warm-up is measured over more than half a minute."""
WARM_UP_S = 10.0
"""The goodput shown leaves out the limiter's first seconds (slow start, first refusals)..."""
TAIL_SHARE = 0.05
"""...and the last 5 % of the accepted calls, when the backlog runs out."""

SHOWN_METRICS = (
    "stream_records_consumed_total",
    "stream_sms_stored_total",
    "stream_sms_already_stored_total",
    "stream_sms_retried_total",
    "stream_sms_dead_lettered_total",
    "stream_commits_total",
    "stream_batch_size_count",
    "stream_mongo_write_seconds_sum",
    "stream_api_responses_total",
    "stream_limiter_limit",
)

OUTCOMES = (
    "stream_sms_stored_total",
    "stream_sms_already_stored_total",
    "stream_sms_dead_lettered_total",
)
"""Where a record's processing ends; a retried one gets here on a later attempt."""

POLL_S = 0.5
"""How often the demo looks at the progress: often enough to look live on a terminal."""

PLAIN_LINE_EVERY_S = 5.0
"""Without a terminal (CI, a pipe), one progress line per 5 s: a log, not an animation."""


def processed_records(registry: CollectorRegistry = REGISTRY) -> int:
    """Records whose processing ended (stored, already stored or dead-lettered), so far.

    The demo runs the consumer in-process, so it reads the consumer's own counters; a
    redelivered record counts again, which a caller should expect past the total.
    """
    return round(
        sum(
            sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name in OUTCOMES
        )
    )


class Progress:
    """Shows `done of total` records processed: redrawn in place on a terminal, otherwise
    a plain line when the count changed, at most every PLAIN_LINE_EVERY_S."""

    def __init__(
        self, total: int, out: TextIO, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._total = total
        self._out = out
        self._clock = clock
        self._interactive = out.isatty()
        self._shown: tuple[int, float] | None = None

    def update(self, done: int) -> None:
        text = f"  processing... {min(done, self._total)} of {self._total} records processed"
        if self._interactive:
            self._out.write(f"\r{text}   ")
            self._out.flush()
            return
        now = self._clock()
        if self._shown is None or (
            done != self._shown[0] and now - self._shown[1] >= PLAIN_LINE_EVERY_S
        ):
            print(text, file=self._out, flush=True)
            self._shown = (done, now)

    def finish(self, message: str) -> None:
        prefix, padding = ("\r", " " * 30) if self._interactive else ("", "")
        print(f"{prefix}  {message}{padding}", file=self._out, flush=True)


async def _partitions(admin: Any, topics: list[str]) -> list[TopicPartition]:
    described = await admin.describe_topics(topics)
    return [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]


async def _unsettled(settings: Settings, admin: Any, consumer: AIOKafkaConsumer) -> int:
    """Records of the main and retry topics not yet committed by the group."""
    ends = await consumer.end_offsets(
        await _partitions(admin, [settings.topic, *settings.retry_topics])
    )
    done = await admin.list_consumer_group_offsets(settings.group_id)
    return sum(end - (done[tp].offset if tp in done else 0) for tp, end in ends.items())


async def _run_until_settled(settings: Settings, total: int) -> float:
    """Run one consumer until the group has committed every record; the progress shown is
    records processed, which runs ahead of the commits."""
    stop = asyncio.Event()
    started = time.monotonic()
    already = processed_records()
    progress = Progress(total, sys.stdout)
    task = asyncio.create_task(serve(settings, stop))
    admin = AIOKafkaAdminClient(**client_options(settings))
    consumer = AIOKafkaConsumer(**client_options(settings))
    await admin.start()
    await consumer.start()
    try:
        while await _unsettled(settings, admin, consumer) > 0:
            if task.done():
                task.result()
            progress.update(processed_records() - already)
            await asyncio.sleep(POLL_S)
        progress.finish("every record processed and committed")
        return time.monotonic() - started
    finally:
        stop.set()
        await task
        await consumer.stop()
        await admin.close()


async def _report_mongo(settings: Settings) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    collection = client[settings.mongo_db][settings.mongo_collection]
    try:
        total = await collection.count_documents({})
        print(f"\nMongoDB {settings.mongo_db}.{settings.mongo_collection}: {total} documents")
        pipeline: list[dict[str, Any]] = [
            {"$group": {"_id": "$parsed.category", "count": {"$sum": 1}}},
            {"$sort": {"count": -1}},
        ]
        categories = [row async for row in await collection.aggregate(pipeline)]
        for row in categories:
            print(f"  {row['_id']:<12} {row['count']}")
        print("  examples (sender masked):")
        for row in categories:
            example = await collection.find_one({"parsed.category": row["_id"]})
            if example is not None:
                parsed = {k: v for k, v in example["parsed"].items() if v is not None}
                print(f"    {example['_id']} from {mask(example['sender'])}: {parsed}")
    finally:
        await client.close()


async def _report_dlq(settings: Settings) -> None:
    entries = [entry async for entry in dlq_entries(settings)]
    reasons = Counter(str(entry["error_class"]) for entry in entries)
    print(f"\nDead-letter topic {settings.dlq_topic}: {len(entries)} records")
    for reason, count in reasons.most_common():
        example = next(e for e in entries if str(e["error_class"]) == reason)
        print(f"  {reason:<14} {count:>4}  e.g. {example['error_message']}")


def goodput_line(history: list[dict[str, int]], allowed: float) -> str:
    """Calls the upstream accepted per second after the warm-up and before the backlog's
    tail, against the rate it allows (the limiter's figure of merit)."""
    if not history:
        return "Upstream goodput: no calls"
    by_second = {entry["t"]: entry.get("ok", 0) for entry in history}
    seconds = [(t, by_second.get(t, 0)) for t in range(history[0]["t"], history[-1]["t"] + 1)]
    start = seconds[0][0] + WARM_UP_S
    total = sum(accepted for _, accepted in seconds)
    done, end = 0, seconds[-1][0]
    for second, accepted in seconds:
        done += accepted
        if done >= (1.0 - TAIL_SHARE) * total:
            end = second
            break
    window = [accepted for second, accepted in seconds if start <= second < end]
    if len(window) < 5:
        return "Upstream goodput: too short a run to measure (try a larger --count)"
    rate = sum(window) / len(window)
    return (
        f"Upstream goodput: {rate:.0f} calls/s accepted from {WARM_UP_S:.0f} s in until "
        f"{1 - TAIL_SHARE:.0%} were done ({len(window)} s): {rate / allowed:.2f} of the "
        f"{allowed:.0f}/s it allows"
    )


def _report_metrics() -> None:
    print("\nMetrics (as served on /metrics):")
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name in SHOWN_METRICS and sample.value:
                labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
                print(f"  {sample.name}{{{labels}}} {sample.value:g}")


async def _demo(args: argparse.Namespace) -> None:
    print("Bringing the local stack up (first run downloads Kafka and builds FerretDB)...")
    endpoints = await ensure_up(Path(args.dir))
    print(f"  Kafka {endpoints.kafka_bootstrap}, Mongo {endpoints.mongo_url}")
    run = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    settings = Settings(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        mongo_url=endpoints.mongo_url,
        topic=f"sms.demo.{run}",
        create_topic=True,
        group_id=f"sms-demo-{run}",
        mongo_db="sms_demo",
        mongo_collection=f"messages_{run}",
        retry_delays_s=(1.0, 3.0),
        metrics_port=free_port(),
        log_level="ERROR",
    )
    upstream = None
    if args.http:
        upstream = ReferenceUpstream(HTTP_DEMO_UPSTREAM, seed=args.seed)
        await upstream.start()
        settings = settings.replace(processor="http", api_url=upstream.url)
        print(f"  reference upstream at {upstream.url}: ~300 req/s allowed, 250 ms median")
    try:
        await ensure_topics(settings)
        rng = random.Random(args.seed)  # noqa: S311 - synthetic data, not secrets
        records = synthetic_records(
            rng, count=args.count, malformed=args.malformed, duplicates=args.duplicates
        )
        total = args.count + args.malformed + args.duplicates
        print(
            f"\nProducing {total} records to {settings.topic} ({args.count} SMS, "
            f"{args.malformed} malformed, {args.duplicates} duplicates)..."
        )
        await produce_records(settings, records)
        print(
            f"Processing with `stream run` ({settings.processor} processor, "
            f"metrics on http://127.0.0.1:{settings.metrics_port}/metrics)..."
        )
        elapsed = await _run_until_settled(settings, total)
        print(f"  {total} records in {elapsed:.1f} s: {total / elapsed:,.0f} records/s")
        await _report_mongo(settings)
        await _report_dlq(settings)
        _report_metrics()
        if upstream is not None:
            stats = upstream.stats()
            print(f"\nUpstream saw: { {k: v for k, v in stats.items() if k != 'history'} }")
            print(goodput_line(stats["history"], HTTP_DEMO_UPSTREAM.rate))
    finally:
        if upstream is not None:
            await upstream.aclose()
    print(f"\nThe stack keeps running; `stream stack down --dir {args.dir}` stops it.")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stream demo", description=__doc__)
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        help=f"synthetic SMS to produce (default 5000, with --http {HTTP_DEMO_COUNT})",
    )
    parser.add_argument("--malformed", type=int, default=12, help="malformed records mixed in")
    parser.add_argument("--duplicates", type=int, default=50, help="SMS sent twice")
    parser.add_argument("--http", action="store_true", help="use the HTTP processor")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", default=".stack", help="stack directory")
    args = parser.parse_args(argv)
    if args.count is None:
        args.count = HTTP_DEMO_COUNT if args.http else 5000
    logs.configure("ERROR")
    try:
        asyncio.run(_demo(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
