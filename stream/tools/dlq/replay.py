"""`stream dlq replay`: send dead-lettered records back to the main topic, each at most once.

Replay positions. A record belongs to one *category*: its reason, and whether it already
came back to the DLQ after a replay (it has `stream.replayed-from`). Each category has its
own consumer group (`<prefix>.<reason>`, `<prefix>.<reason>.replayed`) whose committed
offset per partition means "every record of this category below it has been replayed".
A shared position cannot do this: a group has one offset per partition, so moving it past a
record it did not send (another reason, one that can never succeed) would lose that record
for good, and leaving it behind would send the same record again on the next run. So

1. a run reads the whole DLQ and sends each record of a category it selected that is at
   or past its category's position: a plain `replay` selects every reason that may
   succeed, `--reason X` only X, `--include-replayed` adds the records that came back;
2. per fetched batch, it publishes and waits until Kafka acknowledged all,
3. then commits the batch's last offset + 1 to the group of every category it sent.

No DLQ record is replayed twice however runs are mixed, and a category is given a group
only when one of its records is sent: a dry run, or an unknown reason, creates none. A crash
between 2 and 3 sends that batch again (at-least-once; the sink keys by id). Two replays
running at once are not fenced from each other: run one at a time.

A replayed record keeps its key, value, the producer's headers and its failure headers
(origin, attempt, first failure), so the processor continues its attempt count; only
`stream.not-before` is dropped and `stream.replayed-from` set to `dlq:<partition>:<offset>`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field, replace

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.adapters.kafka import client_options, new_producer
from stream.adapters.publisher import send_delivery
from stream.config import Settings
from stream.engine.failures import VALUE_NULL, Delivery, Failure, header
from stream.errors import StreamError
from stream.tools.common import EXIT_OK
from stream.tools.dlq.read import NO_REASON, read_to_end, topic_partitions

__all__ = [
    "NEVER_SUCCEED",
    "Category",
    "ReplayResult",
    "default_prefix",
    "replay_dlq",
    "run_replay",
]

NEVER_SUCCEED = frozenset(
    {
        "invalid_json",
        "invalid_utf8",
        "oversize",
        "empty",
        "missing_field",
        "invalid_field",
        "unstorable",
    }
)
"""Reasons decided by the record's own bytes: sent back as they are, they fail the same way,
so a plain replay skips them (naming one with `--reason` still replays it)."""


@dataclass(frozen=True, slots=True, order=True)
class Category:
    """The unit a replay position is kept for: a reason, and whether the records came back
    to the DLQ after a replay."""

    reason: str
    came_back: bool

    def group(self, prefix: str) -> str:
        return f"{prefix}.{self.reason}" + (".replayed" if self.came_back else "")

    def __str__(self) -> str:
        return self.reason + (" (came back after a replay)" if self.came_back else "")


def default_prefix(settings: Settings) -> str:
    """`<STREAM_GROUP_ID>.dlq-replay`: the replay groups' names start with it."""
    return f"{settings.group_id}.dlq-replay"


@dataclass
class ReplayResult:
    """One replay run: records sent back (or that would be, on a dry run) by category, and
    records skipped by (why, reason)."""

    replayed: Counter[Category] = field(default_factory=Counter)
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)
    reasons: set[str] = field(default_factory=set)

    def lines(self, *, dry_run: bool, route: str) -> Iterator[str]:
        verb = "would replay" if dry_run else "replayed"
        sent, skipped = sum(self.replayed.values()), sum(self.skipped.values())
        yield f"{verb} {sent}, skipped {skipped} ({route})"
        for category, count in sorted(self.replayed.items()):
            yield f"  {verb} {count} {category}"
        for (why, reason), count in sorted(self.skipped.items()):
            yield f"  skipped {count} {reason}: {why}"


ALREADY_REPLAYED = "already replayed"
NOT_NAMED = "not named by --reason"
CAME_BACK = "came back to the DLQ after a replay (add --include-replayed)"
NEVER = "cannot succeed as the same bytes (name it with --reason)"
NO_VALUE = "the DLQ copy has no value (omitted or a tombstone): nothing to send"
NO_FAILURE = "no readable stream.* failure headers: not a DLQ copy"


class _Positions:
    """Each category's replay position per DLQ partition: read from its group on first
    use, committed through a consumer of that group started on the first commit (a
    consumer commits for its own group only; the group exists from then on)."""

    def __init__(
        self,
        settings: Settings,
        stack: AsyncExitStack,
        admin: AIOKafkaAdminClient,
        prefix: str,
        partitions: Sequence[TopicPartition],
    ) -> None:
        self._settings = settings
        self._stack = stack
        self._admin = admin
        self._prefix = prefix
        self._partitions = list(partitions)
        self._offsets: dict[Category, dict[TopicPartition, int]] = {}
        self._committers: dict[Category, AIOKafkaConsumer] = {}

    async def of(self, category: Category, tp: TopicPartition) -> int:
        if category not in self._offsets:
            committed = await self._admin.list_consumer_group_offsets(
                category.group(self._prefix), partitions=self._partitions
            )
            self._offsets[category] = {
                p: meta.offset for p, meta in committed.items() if meta.offset >= 0
            }
        return self._offsets[category].get(tp, 0)

    async def commit(self, category: Category, tp: TopicPartition, offset: int) -> None:
        committer = self._committers.get(category)
        if committer is None:
            committer = AIOKafkaConsumer(
                **client_options(self._settings),
                group_id=category.group(self._prefix),
                enable_auto_commit=False,
            )
            await committer.start()
            self._stack.push_async_callback(committer.stop)
            committer.assign(self._partitions)
            committer.pause(*self._partitions)
            self._committers[category] = committer
        await committer.commit({tp: offset})
        self._offsets[category][tp] = offset


def _selected(category: Category, reason: str | None, include_replayed: bool) -> str | None:
    """Why a run does not send records of `category`, or None if it does."""
    if reason is not None and category.reason != reason:
        return NOT_NAMED
    if category.came_back and not include_replayed:
        return CAME_BACK
    if reason is None and category.reason in NEVER_SUCCEED:
        return NEVER
    return None


def _replay_copy(settings: Settings, record: ConsumerRecord, failure: Failure) -> Delivery:
    """The record for the main topic: every header kept but not-before, the marker set;
    a value the copy could not carry as null (`stream.value-null`) null again."""
    marker = f"dlq:{record.partition}:{record.offset}"
    failure = replace(
        failure, not_before=None, origin=replace(failure.origin, replayed_from=marker)
    )
    copy = Delivery.failed(
        topic=settings.topic,
        key=record.key,
        value=record.value,
        original_headers=record.headers,
        failure=failure,
    )
    return replace(copy, value=None) if header(record.headers, VALUE_NULL) else copy


async def replay_dlq(
    settings: Settings,
    *,
    reason: str | None = None,
    include_replayed: bool = False,
    prefix: str | None = None,
    dry_run: bool = False,
) -> ReplayResult:
    """Send DLQ records back to the main topic (the module docstring has the rules).

    A dry run reads and counts without producing or committing. Raises StreamError if the
    DLQ topic does not exist or no record in it has `reason`, and the producer's
    KafkaError if a record could not be delivered (nothing of that batch is committed, so
    the next run sends it again).
    """
    partitions = await topic_partitions(settings, settings.dlq_topic)
    prefix = prefix or default_prefix(settings)
    result = ReplayResult()
    async with AsyncExitStack() as stack:
        admin = AIOKafkaAdminClient(**client_options(settings))
        await admin.start()
        stack.push_async_callback(admin.close)
        reader = AIOKafkaConsumer(
            **client_options(settings), group_id=None, enable_auto_commit=False
        )
        await reader.start()
        stack.push_async_callback(reader.stop)
        reader.assign(partitions)
        await reader.seek_to_beginning()
        producer = None
        if not dry_run:
            producer = new_producer(settings)
            await producer.start()
            stack.push_async_callback(producer.stop)
        positions = _Positions(settings, stack, admin, prefix, partitions)
        batches = await stack.enter_async_context(aclosing(read_to_end(reader)))
        async for tp, records in batches:
            sent: list[Delivery] = []
            categories: set[Category] = set()
            for record in records:
                failure = Failure.from_headers(record.headers)
                if failure is None:
                    result.skipped[NO_FAILURE, NO_REASON] += 1
                    continue
                result.reasons.add(failure.error_class)
                category = Category(failure.error_class, failure.origin.replayed_from is not None)
                why = _selected(category, reason, include_replayed)
                if why is None and record.value is None:
                    why = NO_VALUE
                if why is None and record.offset < await positions.of(category, tp):
                    why = ALREADY_REPLAYED
                if why is not None:
                    result.skipped[why, str(category)] += 1
                    continue
                sent.append(_replay_copy(settings, record, failure))
                categories.add(category)
                result.replayed[category] += 1
            if producer is not None and sent:
                futures = [await send_delivery(producer, d) for d in sent]
                await asyncio.gather(*futures)
                for category in sorted(categories):
                    await positions.commit(category, tp, records[-1].offset + 1)
    if reason is not None and reason not in result.reasons:
        present = ", ".join(sorted(result.reasons)) or "none, it is empty"
        raise StreamError(
            f"no record in {settings.dlq_topic} has reason {reason!r} (reasons there: {present})"
        )
    return result


async def run_replay(settings: Settings, args: argparse.Namespace) -> int:
    result = await replay_dlq(
        settings,
        reason=args.reason,
        include_replayed=args.include_replayed,
        prefix=args.group_prefix,
        dry_run=args.dry_run,
    )
    route = f"{settings.dlq_topic} -> {settings.topic}"
    for line in result.lines(dry_run=args.dry_run, route=route):
        print(line)
    return EXIT_OK

