"""Helpers for tests that run the real pipeline against the real stack."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.app import serve
from stream.config import Settings
from stream.devkit.stack import StackEndpoints
from stream.devkit.stack.process import free_port
from stream.engine.ports import Processor

BODIES = [
    "Rs.1,250.00 debited from A/c XX4321 on 28-11-26 to VPA grocer@upi. Avl Bal Rs 9,800.00",
    "482913 is your OTP for login to NetBanking. Valid for 10 minutes. Do not share.",
    "Your package with AWB 7845123690 is out for delivery today.",
    "Hi, are we still on for dinner tonight?",
]


def sms_value(n: int, prefix: str = "sms") -> dict[str, Any]:
    return {
        "id": f"{prefix}-{n}",
        "sender": f"+2547{n:08d}",
        "body": BODIES[n % len(BODIES)],
        "received_at": "2026-11-28T10:00:00Z",
    }


def settings_for(
    stack: StackEndpoints, topic: str, db: str, group: str, **changes: Any
) -> Settings:
    """Fast settings for tests: short waits, short retry delays, any free metrics port."""
    base = Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        mongo_url=stack.mongo_url,
        topic=topic,
        group_id=group,
        mongo_db=db,
        retry_delays_s=(0.3, 0.6),
        batch_wait_s=0.02,
        metrics_port=0,
        drain_timeout_s=5.0,
    )
    return base.replace(**changes)


async def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes | dict[str, Any]],
    partition: int | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for value in values:
            raw = value if isinstance(value, bytes) else orjson.dumps(value)
            key = value["sender"].encode() if isinstance(value, dict) else None
            futures.append(await producer.send(topic, raw, key=key, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord]:
    """Every record of `topic` up to its current end, without a group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    if not tps:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def committed(admin: Any, group: str, topic: str) -> dict[int, int]:
    """Committed offsets of `group` on `topic`, by partition."""
    offsets = await admin.list_consumer_group_offsets(group)
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


@asynccontextmanager
async def running(
    settings: Settings, processor: Processor | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """One consumer of the group in this process; stopped (drained) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, processor))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


def env_for(settings: Settings) -> dict[str, str]:
    """The environment that makes `stream run` use `settings` (the subset tests change)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    return env | {
        "STREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STREAM_TOPIC": settings.topic,
        "STREAM_GROUP_ID": settings.group_id,
        "STREAM_MONGO_URL": settings.mongo_url,
        "STREAM_MONGO_DB": settings.mongo_db,
        "STREAM_MONGO_COLLECTION": settings.mongo_collection,
        "STREAM_BATCH_WAIT_MS": str(int(settings.batch_wait_s * 1000)),
        "STREAM_RETRY_DELAYS": ",".join(f"{int(d * 1000)}ms" for d in settings.retry_delays_s),
        "STREAM_METRICS_PORT": str(settings.metrics_port),
        "STREAM_DRAIN_TIMEOUT_MS": str(int(settings.drain_timeout_s * 1000)),
        "STREAM_LOG_LEVEL": settings.log_level,
        "STREAM_PROCESSOR": settings.processor,
        "STREAM_API_URL": settings.api_url,
        "STREAM_API_TOKEN": settings.api_token,
        "STREAM_SESSION_TIMEOUT_MS": str(int(settings.session_timeout_s * 1000)),
        "STREAM_REBALANCE_TIMEOUT_MS": str(int(settings.rebalance_timeout_s * 1000)),
        "STREAM_HALT_PROBE_INTERVAL": f"{int(settings.halt_probe_interval_s * 1000)}ms",
        "STREAM_MONGO_HALT_AFTER": f"{int(settings.mongo_halt_after_s * 1000)}ms",
        "STREAM_DLQ_HALT_MIN": str(settings.dlq_halt_min),
        "STREAM_DLQ_HALT_RATIO": str(settings.dlq_halt_ratio),
        "STREAM_KAFKA_GROUP_INSTANCE_ID": settings.kafka_group_instance_id,
        "STREAM_METADATA_REFRESH": f"{int(settings.metadata_refresh_s * 1000)}ms",
    }


class StreamProcess:
    """`stream run` as a child process with its stdout captured to a file."""

    def __init__(self, settings: Settings, log_path: Any) -> None:
        self.settings = settings.replace(metrics_port=free_port())
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "run"],
            env=env_for(self.settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.metrics_port}"

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def wait(self, within: float = 60.0) -> int:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), within)
        finally:
            self._log.close()

    async def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return await self.wait()
