"""`stream dlq list` and `stream dlq replay`: inspect the dead-letter topic and send records back.

Both read the DLQ partition by partition, in offset order, up to the end offsets seen when
they start, so they terminate even while the processor keeps dead-lettering (`list
--follow` then keeps reading). Every header is read through `Failure.from_headers`.

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
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.adapters.kafka import client_options, new_producer
from stream.adapters.kafka_security import start as start_client
from stream.adapters.publisher import send_delivery
from stream.config import Settings
from stream.engine.failures import VALUE_NULL, Delivery, Failure, foreign_headers, header
from stream.errors import StreamError
from stream.observability.logs import mask
from stream.tools.common import EXIT_OK, run_tool

__all__ = [
    "NEVER_SUCCEED",
    "Category",
    "ReplayResult",
    "default_prefix",
    "describe",
    "dlq_entries",
    "escape",
    "main",
    "replay_dlq",
]

PROG = "stream dlq"

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

FETCH_WAIT_MS = 500
"""Also how long `list --follow` takes to notice Ctrl-C."""

STALL_LIMIT_S = 30.0
"""Records known to exist that do not arrive for this long mean the cluster is unwell:
fail rather than block forever."""

LINE_COLUMNS = 120
"""Every line `list` prints fits a terminal this wide; the error message is what gets cut."""

NO_REASON = "-"
"""Stands for the reason of a record without readable failure headers."""


def escape(data: bytes) -> str:
    """Bytes as printable ASCII: `\\n`, `\\r`, `\\t`, `\\\\` and `\\xNN` for anything else
    outside 0x20-0x7e, so a bad record's exact bytes can be read off a terminal."""
    named = {0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
    return "".join(named.get(b) or (chr(b) if 0x20 <= b <= 0x7E else f"\\x{b:02x}") for b in data)


async def _partitions(settings: Settings, topic: str) -> list[TopicPartition]:
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


async def _read_to_end(
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


async def _dlq_records(
    settings: Settings, *, follow: asyncio.Event | None = None
) -> AsyncGenerator[ConsumerRecord, None]:
    """Every DLQ record in (partition, offset) order, then, when `follow` is given, new
    ones as they arrive until it is set. Uses no consumer group, so reading never moves
    anyone's offsets. Raises StreamError if the DLQ topic does not exist."""
    partitions = await _partitions(settings, settings.dlq_topic)
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        async with aclosing(_read_to_end(consumer)) as batches:
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
    async with aclosing(_dlq_records(settings)) as records:
        async for record in records:
            yield describe(record)


def _cut(line: str) -> str:
    return line if len(line) <= LINE_COLUMNS else line[: LINE_COLUMNS - 1] + "…"


def _wrapped(label: str, text: str) -> Iterator[str]:
    """`  label: text`, continued on lines indented under it, none over LINE_COLUMNS."""
    first = f"  {label}: "
    width = LINE_COLUMNS - len(first)
    for start in range(0, max(len(text), 1), width):
        yield (first if start == 0 else " " * len(first)) + text[start : start + width]


def _text_lines(entry: dict[str, object], main_topic: str) -> Iterator[str]:
    """One line per record, the fields that identify it first and the error message last
    (what `_cut` shortens; `--json` has it whole); the origin's topic only when it is not
    `main_topic`; the body by its length. Then the raw bytes, if the entry has them."""
    shown = {k: "-" if v is None else v for k, v in entry.items()}
    origin = f"{shown['original_partition']}:{shown['original_offset']}"
    if entry["original_topic"] not in (None, main_topic):
        origin = f"{entry['original_topic']}:{origin}"
    parts = [
        f"{shown['partition']}:{shown['offset']}",
        str(shown["error_class"]),
        f"attempt={shown['attempt']}",
        str(shown["first_failed_at"]),
        f"from={origin}",
        f"id={shown['sms_id']}",
        f"sender={shown['sender']}",
        f"body={len(str(entry['body']))}ch" if entry["body"] is not None else "body=-",
    ]
    if entry["replayed_from"] is not None:
        parts.append(f"replayed_from={entry['replayed_from']}")
    if entry["value_omitted"] is not None:
        parts.append(f"value_omitted={entry['value_omitted']}B")
    parts.append(str(shown["error_message"]))
    yield _cut("  ".join(parts))
    if "value" in entry:
        yield from _wrapped("key", "-" if entry["key"] is None else str(entry["key"]))
        yield from _wrapped("value", "-" if entry["value"] is None else str(entry["value"]))
        headers = entry.get("headers")
        for name, value in headers if isinstance(headers, list) else ():
            yield from _wrapped(f"header {escape(name.encode())}", value)


@dataclass
class _Listing:
    """What `list` read and showed, for its summary."""

    read: Counter[str] = field(default_factory=Counter)
    came_back: Counter[str] = field(default_factory=Counter)
    shown: int = 0
    stopped_at_limit: bool = False

    def summary(self, topic: str) -> Iterator[str]:
        total = sum(self.read.values())
        limit = " (stopped at --limit)" if self.stopped_at_limit else ""
        yield f"{total} record(s) read from {topic}, {self.shown} shown{limit}"
        width = max((len(reason) for reason in self.read), default=0)
        for reason, count in sorted(self.read.items(), key=lambda rc: (-rc[1], rc[0])):
            back = self.came_back[reason]
            note = f"  ({back} came back after a replay)" if back else ""
            yield _cut(f"  {reason:<{width}}  {count:>6}{note}")


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    """`stream dlq list`: records on stdout, the summary by reason on stderr."""
    stop = asyncio.Event() if args.follow else None
    if stop is not None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    listing = _Listing()
    wanted = set(args.reason or ())
    async with aclosing(_dlq_records(settings, follow=stop)) as records:
        async for record in records:
            if args.limit is not None and listing.shown >= args.limit:
                listing.stopped_at_limit = True
                break
            entry = describe(record, raw=args.raw)
            reason = str(entry["error_class"] or NO_REASON)
            listing.read[reason] += 1
            listing.came_back[reason] += entry["replayed_from"] is not None
            if wanted and reason not in wanted:
                continue
            if args.json:
                print(orjson.dumps(entry).decode(), flush=stop is not None)
            else:
                for line in _text_lines(entry, settings.topic):
                    print(line, flush=stop is not None)
            listing.shown += 1
    for line in listing.summary(settings.dlq_topic):
        print(line, file=sys.stderr)
    return EXIT_OK


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
    partitions = await _partitions(settings, settings.dlq_topic)
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
        batches = await stack.enter_async_context(aclosing(_read_to_end(reader)))
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


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect or replay the dead-letter topic (<STREAM_TOPIC>.dlq). Kafka "
        "settings come from STREAM_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser(
        "list",
        help="print DLQ records in (partition, offset) order, a summary by reason on stderr",
    )
    listing.add_argument(
        "--reason", action="append", metavar="CLASS", help="only this error class (repeatable)"
    )
    listing.add_argument("--limit", type=int, metavar="N", help="print at most N records")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument(
        "--raw",
        action="store_true",
        help="also show key, value and headers as escaped bytes, sender and body unmasked",
    )
    listing.add_argument(
        "--follow", action="store_true", help="keep printing new records until Ctrl-C"
    )
    replay = commands.add_parser(
        "replay",
        help="send DLQ records back to the main topic, each at most once",
        description="Send DLQ records back to the main topic, original bytes and headers. "
        "By default every reason that may succeed, skipping records that came back after a "
        f"replay and reasons that cannot succeed ({', '.join(sorted(NEVER_SUCCEED))}).",
    )
    replay.add_argument("--reason", metavar="CLASS", help="only records of this error class")
    replay.add_argument(
        "--include-replayed",
        action="store_true",
        help="also records that came back to the DLQ after a replay",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="count what would be replayed; send nothing"
    )
    replay.add_argument(
        "--group-prefix",
        metavar="P",
        help="prefix of the consumer groups holding the replay positions, one per reason "
        "(default: <STREAM_GROUP_ID>.dlq-replay)",
    )
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        if args.limit is not None and args.limit < 0:
            parser.error("--limit must not be negative")
        return run_tool(PROG, lambda settings: _list(settings, args))
    return run_tool(PROG, lambda settings: _replay(settings, args))
