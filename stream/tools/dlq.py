"""`stream dlq list` and `stream dlq replay`: inspect the dead-letter topic and send records back.

Both read only up to the end offsets seen when they start, so they terminate even while the
processor keeps dead-lettering (a replayed record that fails again lands behind that end).

`replay` is resumable: it reads with a consumer group and, per fetched batch,

1. publishes the selected records to the main topic and waits until Kafka acknowledged all,
2. then commits the batch's last offset + 1, skipped records included.

A crash between 1 and 2 replays that batch again (at-least-once; the sink keys by id),
but a run that finished never replays the same DLQ record again. Each `--reason` gets its
own default group, because a group has one position per partition: with a shared group,
replaying one error class would move past the others for good.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from stream.adapters.kafka import client_options, new_producer
from stream.adapters.publisher import Router
from stream.config import Settings
from stream.engine.failures import (
    ATTEMPT,
    ERROR_CLASS,
    ERROR_MESSAGE,
    FIRST_FAILED_AT,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
    OUR_HEADER_PREFIX,
    REPLAYED_FROM,
    Delivery,
    header,
)
from stream.errors import ConfigError, StreamError
from stream.observability.logs import mask

__all__ = [
    "REPLAYED_FROM",
    "ReplayResult",
    "default_group",
    "describe",
    "dlq_entries",
    "main",
    "replay_dlq",
]

FETCH_WAIT_MS = 500

STALL_LIMIT_S = 30.0
"""Records known to exist that do not arrive for this long mean the cluster is unwell:
fail rather than block forever."""

JOIN_TIMEOUT_S = 60.0
"""Joining the replay group normally takes the broker's initial rebalance delay (3 s by
default); a minute means another member is stuck in the group."""


async def _read_to_end(
    consumer: AIOKafkaConsumer,
) -> AsyncGenerator[tuple[TopicPartition, list[ConsumerRecord]], None]:
    """Yield (partition, records) from each partition's position up to the end offset it
    had when called; raise StreamError if records stop arriving for STALL_LIMIT_S."""
    assigned = list(consumer.assignment())
    ends = await consumer.end_offsets(assigned)
    behind = {tp for tp in assigned if await consumer.position(tp) < ends[tp]}
    last_progress = time.monotonic()
    while behind:
        fetched = await consumer.getmany(*behind, timeout_ms=FETCH_WAIT_MS)
        for tp, records in fetched.items():
            before_end = [r for r in records if r.offset < ends[tp]]
            if before_end:
                yield tp, before_end
        if fetched:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > STALL_LIMIT_S:
            raise StreamError(f"no records for {STALL_LIMIT_S:.0f}s below the end offsets")
        behind = {tp for tp in behind if await consumer.position(tp) < ends[tp]}


async def _partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """The topic's partitions; StreamError if it does not exist (a wrong STREAM_TOPIC?).

    All topics are listed first because asking for one by name creates it on a broker
    with topic auto-creation on.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            raise StreamError(f"topic {topic} does not exist (is STREAM_TOPIC right?)")
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])


def _number(text: str | None) -> int | str | None:
    return int(text) if text is not None and text.isdigit() else text


def describe(record: ConsumerRecord) -> dict[str, object]:
    """What an operator needs to triage one DLQ record, with sender and body masked."""
    headers = record.headers
    described: dict[str, object] = {
        "partition": record.partition,
        "offset": record.offset,
        "error_class": header(headers, ERROR_CLASS),
        "error_message": header(headers, ERROR_MESSAGE),
        "attempt": _number(header(headers, ATTEMPT)),
        "original_topic": header(headers, ORIGINAL_TOPIC),
        "original_partition": _number(header(headers, ORIGINAL_PARTITION)),
        "original_offset": _number(header(headers, ORIGINAL_OFFSET)),
        "first_failed_at": header(headers, FIRST_FAILED_AT),
        "sms_id": None,
        "sender": None,
        "body": None,
    }
    try:
        sms = orjson.loads(record.value) if record.value is not None else None
    except orjson.JSONDecodeError:
        sms = None
    if isinstance(sms, dict):
        for field in ("sms_id", "sender", "body"):
            value = sms.get("id" if field == "sms_id" else field)
            if isinstance(value, str):
                described[field] = value if field == "sms_id" else mask(value)
    return described


def _text_line(entry: dict[str, object]) -> str:
    """One line per record; the masked body is shown by its length, which is all it tells."""
    shown = {k: "-" if v is None else v for k, v in entry.items()}
    if entry["body"] is not None:
        shown["body"] = f"({len(str(entry['body']))} chars)"
    return "  ".join(
        [
            f"{shown['partition']}:{shown['offset']}",
            str(shown["error_class"]),
            f"attempt={shown['attempt']}",
            f"from={shown['original_topic']}:{shown['original_partition']}:"
            f"{shown['original_offset']}",
            f"first_failed_at={shown['first_failed_at']}",
            f"id={shown['sms_id']}",
            f"sender={shown['sender']}",
            f"body={shown['body']}",
            f"error={shown['error_message']}",
        ]
    )


async def dlq_entries(settings: Settings) -> AsyncGenerator[dict[str, object], None]:
    """`describe` each DLQ record, from the beginning to the end offsets seen at the start.

    Uses no consumer group, so listing never moves anyone's offsets; close it with
    `contextlib.aclosing` when stopping early. Raises StreamError if the DLQ topic does not
    exist, KafkaError if the cluster is unreachable.
    """
    partitions = await _partitions(settings, settings.dlq_topic)
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        async with aclosing(_read_to_end(consumer)) as batches:
            async for _, records in batches:
                for record in records:
                    yield describe(record)
    finally:
        await consumer.stop()


async def _print_entries(settings: Settings, *, limit: int | None, as_json: bool) -> int:
    shown = 0
    if limit == 0:
        return shown
    async with aclosing(dlq_entries(settings)) as entries:
        async for entry in entries:
            print(orjson.dumps(entry).decode() if as_json else _text_line(entry))
            shown += 1
            if shown == limit:
                break
    return shown


@dataclass
class ReplayResult:
    """Counts of one replay run: records sent back (or that would be, on a dry run), skipped."""

    replayed: int = 0
    skipped: int = 0


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    """Signals the first assignment, so the end offsets are read for the partitions we own."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Nothing to do: every batch is committed before the next fetch."""

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.event.set()


def _replayed_headers(record: ConsumerRecord) -> list[tuple[str, bytes]]:
    kept = [(k, v) for k, v in record.headers if not k.startswith(OUR_HEADER_PREFIX)]
    return [*kept, (REPLAYED_FROM, f"dlq:{record.partition}:{record.offset}".encode())]


def default_group(settings: Settings, reason: str | None) -> str:
    """`<group_id>.dlq-replay`, with `.<reason>` appended when replaying one error class."""
    group = f"{settings.group_id}.dlq-replay"
    return f"{group}.{reason}" if reason else group


async def replay_dlq(
    settings: Settings,
    *,
    reason: str | None = None,
    group: str | None = None,
    dry_run: bool = False,
) -> ReplayResult:
    """Send DLQ records (of error class `reason`, or all) back to the main topic.

    Key and value bytes are the originals; our `stream.*` headers are replaced by
    REPLAYED_FROM. A dry run reads and counts without producing or committing. Raises
    StreamError if the DLQ topic does not exist or the group cannot be joined, and the
    producer's KafkaError if a record could not be delivered (nothing of that batch is
    committed, so the next run sends it again).
    """
    await _partitions(settings, settings.dlq_topic)
    result = ReplayResult()
    async with AsyncExitStack() as stack:
        consumer = AIOKafkaConsumer(
            **client_options(settings),
            group_id=group or default_group(settings, reason),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        assigned = _Assigned()
        consumer.subscribe([settings.dlq_topic], listener=assigned)
        try:
            await asyncio.wait_for(assigned.event.wait(), JOIN_TIMEOUT_S)
        except TimeoutError:
            raise StreamError(f"no partitions assigned within {JOIN_TIMEOUT_S:.0f}s") from None
        router = None
        if not dry_run:
            producer = new_producer(settings)
            await producer.start()
            stack.push_async_callback(producer.stop)
            router = Router(producer)
        batches = await stack.enter_async_context(aclosing(_read_to_end(consumer)))
        async for tp, records in batches:
            deliveries = [
                Delivery(
                    topic=settings.topic, key=r.key, value=r.value, headers=_replayed_headers(r)
                )
                for r in records
                if (reason is None or header(r.headers, ERROR_CLASS) == reason)
                and (r.key is not None or r.value is not None)
            ]
            result.replayed += len(deliveries)
            result.skipped += len(records) - len(deliveries)
            if router is not None:
                await router.publish(deliveries)
                await consumer.commit({tp: records[-1].offset + 1})
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream dlq",
        description="Inspect or replay the dead-letter topic (<STREAM_TOPIC>.dlq). Kafka "
        "settings come from STREAM_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser(
        "list", help="print DLQ records, sender and body masked (no consumer group)"
    )
    listing.add_argument("--limit", type=int, metavar="N", help="print at most N records")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    replay = commands.add_parser(
        "replay", help="send DLQ records back to the main topic, resumably"
    )
    replay.add_argument("--reason", metavar="CLASS", help="only records of this error class")
    replay.add_argument(
        "--dry-run", action="store_true", help="count what would be replayed; send nothing"
    )
    replay.add_argument(
        "--group",
        metavar="G",
        help="consumer group holding the replay position "
        "(default: <STREAM_GROUP_ID>.dlq-replay[.<CLASS>])",
    )
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "list" and args.limit is not None and args.limit < 0:
        parser.error("--limit must not be negative")
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"stream dlq: configuration error: {exc}", file=sys.stderr)
        return 2
    # The clients retry transient broker errors (a new topic's leader election) themselves;
    # their warnings would only garble this command's output.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    try:
        if args.command == "list":
            shown = asyncio.run(_print_entries(settings, limit=args.limit, as_json=args.json))
            if not args.json:
                print(f"{shown} record(s) shown from {settings.dlq_topic}")
            return 0
        group = args.group or default_group(settings, args.reason)
        result = asyncio.run(
            replay_dlq(settings, reason=args.reason, group=group, dry_run=args.dry_run)
        )
    except (KafkaError, StreamError) as exc:
        print(f"stream dlq: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stream dlq: interrupted", file=sys.stderr)
        return 130
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"{verb} {result.replayed}, skipped {result.skipped} "
        f"({settings.dlq_topic} -> {settings.topic}, group {group})"
    )
    return 0
