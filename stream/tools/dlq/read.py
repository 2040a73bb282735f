"""Reading the dead-letter topic: what `list`, `replay`, `status` and the demo share.

Reads go partition by partition, in offset order, up to the end offsets seen when they
start, so they terminate even while the processor keeps dead-lettering (`list --follow`
then keeps reading). Every header is read through `Failure.from_headers`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.adapters.kafka import client_options
from stream.adapters.kafka_security import start as start_client
from stream.config import Settings
from stream.engine.failures import Failure, foreign_headers
from stream.errors import StreamError
from stream.observability.logs import mask

__all__ = [
    "FETCH_WAIT_MS",
    "NO_REASON",
    "STALL_LIMIT_S",
    "describe",
    "dlq_entries",
    "dlq_records",
    "escape",
    "read_to_end",
    "topic_partitions",
]

FETCH_WAIT_MS = 500
"""Also how long `list --follow` takes to notice Ctrl-C."""

STALL_LIMIT_S = 30.0
"""Records known to exist that do not arrive for this long mean the cluster is unwell:
fail rather than block forever."""

NO_REASON = "-"
"""Stands for the reason of a record without readable failure headers."""


def escape(data: bytes) -> str:
    """Bytes as printable ASCII: `\\n`, `\\r`, `\\t`, `\\\\` and `\\xNN` for anything else
    outside 0x20-0x7e, so a bad record's exact bytes can be read off a terminal."""
    named = {0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
    return "".join(named.get(b) or (chr(b) if 0x20 <= b <= 0x7E else f"\\x{b:02x}") for b in data)


async def topic_partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """The topic's partitions; StreamError if it does not exist (a wrong STREAM_TOPIC?).

    All topics are listed first because asking for one by name creates it on a broker
    with topic auto-creation on.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    await start_client(admin, settings)
    try:
        if topic not in await admin.list_topics():
            raise StreamError(f"topic {topic} does not exist (is STREAM_TOPIC right?)")
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])


async def read_to_end(
    consumer: AIOKafkaConsumer,
) -> AsyncGenerator[tuple[TopicPartition, list[ConsumerRecord]], None]:
    """Yield (partition, records) of each assigned partition in turn, in (partition, offset)
    order, from its position up to the end offset it had when called; raise StreamError if
    records stop arriving for STALL_LIMIT_S."""
    assigned = sorted(consumer.assignment())
    ends = await consumer.end_offsets(assigned)
    for tp in assigned:
        last_progress = time.monotonic()
        while await consumer.position(tp) < ends[tp]:
            fetched = (await consumer.getmany(tp, timeout_ms=FETCH_WAIT_MS)).get(tp, [])
            before_end = [r for r in fetched if r.offset < ends[tp]]
            if before_end:
                yield tp, before_end
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > STALL_LIMIT_S:
                raise StreamError(f"no records for {STALL_LIMIT_S:.0f}s below the end offsets")


async def dlq_records(
    settings: Settings, *, follow: asyncio.Event | None = None
) -> AsyncGenerator[ConsumerRecord, None]:
    """Every DLQ record in (partition, offset) order, then, when `follow` is given, new
    ones as they arrive until it is set. Uses no consumer group, so reading never moves
    anyone's offsets. Raises StreamError if the DLQ topic does not exist."""
    partitions = await topic_partitions(settings, settings.dlq_topic)
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        async with aclosing(read_to_end(consumer)) as batches:
            async for _, records in batches:
                for record in records:
                    yield record
        while follow is not None and not follow.is_set():
            fetched = await consumer.getmany(timeout_ms=FETCH_WAIT_MS)
            for tp in sorted(fetched):
                for record in fetched[tp]:
                    yield record
    finally:
        await consumer.stop()


def _instant(when: datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def describe(record: ConsumerRecord, *, raw: bool = False) -> dict[str, object]:
    """What an operator needs to triage one DLQ record. Sender and body are masked unless
    `raw`, which also adds the key, value and producer's headers, escaped (see `escape`)."""
    failure = Failure.from_headers(record.headers)
    origin = failure.origin if failure is not None else None
    described: dict[str, object] = {
        "partition": record.partition,
        "offset": record.offset,
        "error_class": failure.error_class if failure is not None else None,
        "error_message": failure.error_message if failure is not None else None,
        "attempt": failure.attempt if failure is not None else None,
        "original_topic": origin.topic if origin is not None else None,
        "original_partition": origin.partition if origin is not None else None,
        "original_offset": origin.offset if origin is not None else None,
        "first_failed_at": _instant(failure.first_failed_at) if failure is not None else None,
        "replayed_from": origin.replayed_from if origin is not None else None,
        "value_omitted": failure.value_omitted if failure is not None else None,
        "sms_id": None,
        "sender": None,
        "body": None,
    }
    try:
        sms = orjson.loads(record.value) if record.value is not None else None
    except orjson.JSONDecodeError:
        sms = None
    if isinstance(sms, dict):
        for name, key in (("sms_id", "id"), ("sender", "sender"), ("body", "body")):
            value = sms.get(key)
            if isinstance(value, str):
                described[name] = value if name == "sms_id" or raw else mask(value)
    if raw:
        described["key"] = None if record.key is None else escape(record.key)
        described["value"] = None if record.value is None else escape(record.value)
        described["headers"] = [
            [k, None if v is None else escape(v)] for k, v in foreign_headers(record.headers)
        ]
    return described


async def dlq_entries(settings: Settings) -> AsyncGenerator[dict[str, object], None]:
    """`describe` each DLQ record (masked), in (partition, offset) order, up to the end
    offsets seen at the start; close it with `contextlib.aclosing` when stopping early.
    Raises StreamError if the DLQ topic does not exist, KafkaError if the cluster is
    unreachable."""
    async with aclosing(dlq_records(settings)) as records:
        async for record in records:
            yield describe(record)

