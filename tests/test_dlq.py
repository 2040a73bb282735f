"""`stream dlq list|replay` run as subprocesses against the real broker, on records
dead-lettered the way the processor does it (`Delivery.failed`), and with the processor
running on the records that fail again after a replay."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from pipeline_support import committed, read_topic, running, settings_for, sms_value
from support import eventually

from stream.adapters.kafka import new_producer
from stream.config import Settings
from stream.devkit.fakes import ScriptedProcessor
from stream.devkit.stack import StackEndpoints
from stream.engine.failures import NOT_BEFORE, Delivery, Failure, Origin, foreign_headers
from stream.observability.logs import mask
from stream.tools.dlq import LINE_COLUMNS

NewTopicFactory = Callable[..., Awaitable[str]]
UniqueName = Callable[..., str]

# Bounds on a CLI run and on reading a topic back; both take a second or two when healthy.
CLI_DEADLINE_S = 120.0
READ_DEADLINE_S = 30.0

SENDER = "+254798765432"
BODY = "Your M-PESA PIN reset code is 482913"
VALID = orjson.dumps({"id": "sms-4", "sender": SENDER, "body": BODY, "received_at": "2026-01-01"})
BAD_BYTES = b"\xffnot json\n\x00"


@dataclasses.dataclass(frozen=True)
class Dead:
    """One DLQ record to publish: its reason, bytes, producer's headers, replay marker."""

    reason: str
    key: bytes | None
    value: bytes | None
    foreign: tuple[tuple[str, bytes], ...] = ()
    replayed_from: str | None = None


FAILED = [
    Dead("invalid_json", SENDER.encode(), b'{"id": "sms-1", "sender": "' + SENDER.encode()),
    Dead("invalid_json", None, BAD_BYTES, (("trace-id", b"t-2"),)),
    Dead("invalid_field", SENDER.encode(), VALID.replace(b"2026-01-01", b"yesterday")),
    Dead("http_503", SENDER.encode(), VALID, (("trace-id", b"t-4"), ("tenant", b"ke"))),
    Dead("http_503", SENDER.encode(), VALID, (), replayed_from="dlq:0:0"),
]


async def _settings(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName
) -> Settings:
    """Settings on fresh topics (a two-partition DLQ) and a group of this test's own."""
    settings = Settings(
        kafka_bootstrap=stack.kafka_bootstrap,
        topic=await new_topic(3),
        group_id=unique_name("group"),
    )
    for derived in settings.retry_topics:
        await new_topic(1, name=derived)
    await new_topic(2, name=settings.dlq_topic)
    return settings


def _failure(settings: Settings, n: int, dead: Dead) -> Failure:
    """The failure of FAILED[n]: attempt n + 1, from main-topic offset 100 + n."""
    return Failure(
        origin=Origin(settings.topic, n % 3, 100 + n, replayed_from=dead.replayed_from),
        attempt=n + 1,
        error_class=dead.reason,
        error_message=f"{dead.reason} in record {n}",
        first_failed_at=datetime(2026, 3, 1, 12, 0, n, tzinfo=UTC),
        # Never on a DLQ record written by the engine; replay must drop it all the same.
        not_before=datetime(2026, 3, 1, 13, 0, tzinfo=UTC) if n == 3 else None,
    )


async def _dead_letter(settings: Settings, records: list[Dead], first: int = 0) -> None:
    """Publish `records` to the DLQ as the processor would (numbered from `first`)."""
    deliveries = [
        Delivery.failed(
            topic=settings.dlq_topic,
            key=dead.key,
            value=dead.value,
            original_headers=dead.foreign,
            failure=_failure(settings, n, dead),
        )
        for n, dead in enumerate(records, start=first)
    ]
    producer = new_producer(settings)
    await producer.start()
    try:
        futures = [
            await producer.send(d.topic, key=d.key, value=d.value, headers=d.headers)
            for d in deliveries
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    return env | {
        "STREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STREAM_TOPIC": settings.topic,
        "STREAM_GROUP_ID": settings.group_id,
    }


async def _start_cli(*args: str, settings: Settings) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream", "dlq", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(settings),
    )  # fmt: skip


async def _dlq_cli(*args: str, settings: Settings) -> tuple[int, str, str]:
    process = await _start_cli(*args, settings=settings)
    async with asyncio.timeout(CLI_DEADLINE_S):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _read(settings: Settings, topic: str) -> list[Any]:
    async with asyncio.timeout(READ_DEADLINE_S):
        return await read_topic(settings.kafka_bootstrap, topic)


async def _replay_groups(kafka_admin: Any, settings: Settings) -> list[str]:
    groups = await kafka_admin.list_consumer_groups()
    return sorted(g[0] for g in groups if g[0].startswith(f"{settings.group_id}."))


def _raw_value(lines: list[str], starting: str) -> str:
    """The value printed on the `  value: ` line that starts so, and on its continuations."""
    at = next(i for i, line in enumerate(lines) if line.startswith(f"  {starting}"))
    indent = " " * len("  value: ")
    parts = [lines[at].removeprefix("  value: ")]
    for line in lines[at + 1 :]:
        if not line.startswith(indent):
            break
        parts.append(line.removeprefix(indent))
    return "".join(parts)


async def test_list_shows_records_in_order_masked_with_a_summary_on_stderr(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName
) -> None:
    settings = await _settings(stack, new_topic, unique_name)
    await _dead_letter(settings, FAILED)
    dlq = await _read(settings, settings.dlq_topic)

    code, out, err = await _dlq_cli("list", "--json", settings=settings)

    assert code == 0, err
    assert SENDER not in out
    assert "PIN reset" not in out
    entries = [orjson.loads(line) for line in out.splitlines()]
    assert [(e["partition"], e["offset"]) for e in entries] == sorted(
        (r.partition, r.offset) for r in dlq
    )
    by_attempt = sorted(entries, key=lambda e: e["attempt"])
    assert [e["error_class"] for e in by_attempt] == [d.reason for d in FAILED]
    assert [e["sms_id"] for e in by_attempt] == [None, None, "sms-4", "sms-4", "sms-4"]
    assert [e["sender"] for e in by_attempt] == [None, None, *[mask(SENDER)] * 3]
    assert [e["replayed_from"] for e in by_attempt] == [None] * 4 + ["dlq:0:0"]
    assert by_attempt[2] | {"partition": 0, "offset": 0} == {
        "partition": 0,
        "offset": 0,
        "error_class": "invalid_field",
        "error_message": "invalid_field in record 2",
        "attempt": 3,
        "original_topic": settings.topic,
        "original_partition": 2,
        "original_offset": 102,
        "first_failed_at": "2026-03-01T12:00:02Z",
        "replayed_from": None,
        "value_omitted": None,
        "sms_id": "sms-4",
        "sender": mask(SENDER),
        "body": mask(BODY),
    }
    assert err.splitlines() == [
        f"5 record(s) read from {settings.dlq_topic}, 5 shown",
        "  http_503            2  (1 came back after a replay)",
        "  invalid_json        2",
        "  invalid_field       1",
    ]

    code, out, err = await _dlq_cli("list", "--limit", "2", settings=settings)
    assert code == 0, err
    assert len(out.splitlines()) == 2
    assert SENDER not in out
    assert err.splitlines()[0] == (
        f"2 record(s) read from {settings.dlq_topic}, 2 shown (stopped at --limit)"
    )


async def test_list_filters_by_reason_and_shows_raw_bytes_in_120_columns(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName
) -> None:
    settings = await _settings(stack, new_topic, unique_name)
    long_reason = Dead("invalid_field", SENDER.encode(), b'{"id": "' + b"x" * 400 + b'"}')
    await _dead_letter(settings, [*FAILED, long_reason])

    code, out, err = await _dlq_cli("list", "--reason", "invalid_json", settings=settings)

    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert all(" invalid_json " in line for line in lines)
    assert SENDER not in out
    assert "\\xff" not in out, "raw bytes only when asked for"
    assert err.splitlines()[0] == f"6 record(s) read from {settings.dlq_topic}, 2 shown"

    code, out, err = await _dlq_cli("list", "--raw", settings=settings)

    assert code == 0, err
    assert all(len(line) <= LINE_COLUMNS for line in out.splitlines() + err.splitlines())
    assert "  value: \\xffnot json\\n\\x00" in out.splitlines()
    assert "  header trace-id: t-2" in out.splitlines()
    assert f"sender={SENDER}" in out, "the raw view unmasks"
    assert _raw_value(out.splitlines(), 'value: {"id": "xx') == '{"id": "' + "x" * 400 + '"}'

    code, out, err = await _dlq_cli(
        "list", "--raw", "--json", "--reason", "http_503", settings=settings
    )
    assert code == 0, err
    raw = [orjson.loads(line) for line in out.splitlines()]
    assert {e["value"] for e in raw} == {VALID.decode()}
    assert sorted(map(tuple, raw[0]["headers"] + raw[1]["headers"])) == [
        ("tenant", "ke"),
        ("trace-id", "t-4"),
    ]
    assert {e["body"] for e in raw} == {BODY}


async def test_list_follow_prints_new_records_until_interrupted(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName
) -> None:
    settings = await _settings(stack, new_topic, unique_name)
    await _dead_letter(settings, FAILED[:2])
    process = await _start_cli("list", "--follow", settings=settings)
    assert process.stdout is not None
    async with asyncio.timeout(CLI_DEADLINE_S):
        before = [await process.stdout.readline() for _ in range(2)]
        await _dead_letter(settings, FAILED[2:3], first=2)
        after = await process.stdout.readline()
        process.send_signal(signal.SIGINT)
        rest, err = await process.communicate()

    assert process.returncode == 0, err
    assert all(b" invalid_json " in line for line in before)
    assert b" invalid_field " in after
    assert rest == b""
    assert err.decode().splitlines()[0] == f"3 record(s) read from {settings.dlq_topic}, 3 shown"


async def test_list_returns_at_once_on_an_empty_dlq_and_fails_on_a_missing_one(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName
) -> None:
    settings = await _settings(stack, new_topic, unique_name)

    code, out, err = await _dlq_cli("list", settings=settings)
    assert (code, out, err) == (0, "", f"0 record(s) read from {settings.dlq_topic}, 0 shown\n")

    missing = settings.replace(topic=unique_name("absent"))
    code, out, err = await _dlq_cli("list", settings=missing)
    assert (code, out) == (1, "")
    assert err == f"stream dlq: topic {missing.dlq_topic} does not exist (is STREAM_TOPIC right?)\n"


async def test_replay_by_reason_keeps_headers_and_a_plain_replay_never_sends_it_again(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName, kafka_admin: Any
) -> None:
    settings = await _settings(stack, new_topic, unique_name)
    await _dead_letter(settings, FAILED)
    dlq = await _read(settings, settings.dlq_topic)

    code, out, err = await _dlq_cli(
        "replay", "--reason", "http_503", "--dry-run", settings=settings
    )
    assert (code, err) == (0, "")
    assert out.startswith("would replay 1, skipped 4"), out
    assert await _read(settings, settings.topic) == []
    assert await _replay_groups(kafka_admin, settings) == [], "a dry run creates no group"

    code, out, err = await _dlq_cli("replay", "--reason", "http_503", settings=settings)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"replayed 1, skipped 4 ({settings.dlq_topic} -> {settings.topic})",
        "  replayed 1 http_503",
        "  skipped 1 http_503 (came back after a replay): came back to the DLQ after a replay "
        "(add --include-replayed)",
        "  skipped 1 invalid_field: not named by --reason",
        "  skipped 2 invalid_json: not named by --reason",
    ]
    (replayed,) = await _read(settings, settings.topic)
    (source,) = [r for r in dlq if r.value == VALID and ("tenant", b"ke") in r.headers]
    assert (replayed.key, replayed.value) == (source.key, source.value)
    assert foreign_headers(replayed.headers) == [("trace-id", b"t-4"), ("tenant", b"ke")]
    assert list(replayed.headers)[:2] == [("trace-id", b"t-4"), ("tenant", b"ke")]
    assert NOT_BEFORE not in dict(replayed.headers)
    marker = f"dlq:{source.partition}:{source.offset}"
    original = _failure(settings, 3, FAILED[3])
    assert Failure.from_headers(replayed.headers) == dataclasses.replace(
        original,
        not_before=None,
        origin=dataclasses.replace(
            original.origin,
            previous_attempts=4,
            first_failed_at=original.first_failed_at,
            replayed_from=marker,
        ),
    )

    # A plain replay sends every other reason that may succeed: here none is left.
    code, out, err = await _dlq_cli("replay", settings=settings)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"replayed 0, skipped 5 ({settings.dlq_topic} -> {settings.topic})",
        "  skipped 1 http_503: already replayed",
        "  skipped 1 http_503 (came back after a replay): came back to the DLQ after a replay "
        "(add --include-replayed)",
        "  skipped 1 invalid_field: cannot succeed as the same bytes (name it with --reason)",
        "  skipped 2 invalid_json: cannot succeed as the same bytes (name it with --reason)",
    ]
    assert len(await _read(settings, settings.topic)) == 1

    # Named, a reason that cannot succeed is replayed; each reason keeps its own position.
    code, out, err = await _dlq_cli("replay", "--reason", "invalid_json", settings=settings)
    assert (code, err) == (0, "")
    assert out.startswith("replayed 2, skipped 3"), out
    main = await _read(settings, settings.topic)
    assert sorted(r.value for r in main) == sorted([VALID, FAILED[0].value, BAD_BYTES])

    code, out, err = await _dlq_cli("replay", "--include-replayed", "--dry-run", settings=settings)
    assert (code, err) == (0, "")
    assert out.splitlines()[:2] == [
        f"would replay 1, skipped 4 ({settings.dlq_topic} -> {settings.topic})",
        "  would replay 1 http_503 (came back after a replay)",
    ]
    assert await _replay_groups(kafka_admin, settings) == [
        f"{settings.group_id}.dlq-replay.http_503",
        f"{settings.group_id}.dlq-replay.invalid_json",
    ]


async def test_replay_of_an_unknown_reason_fails_and_creates_no_group(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName, kafka_admin: Any
) -> None:
    settings = await _settings(stack, new_topic, unique_name)
    await _dead_letter(settings, FAILED)

    for dry_run in (["--dry-run"], []):
        code, out, err = await _dlq_cli(
            "replay", "--reason", "http_999", *dry_run, settings=settings
        )
        assert (code, out) == (1, "")
        assert err == (
            f"stream dlq: no record in {settings.dlq_topic} has reason 'http_999' "
            "(reasons there: http_503, invalid_field, invalid_json)\n"
        )

    assert await _replay_groups(kafka_admin, settings) == []
    assert await _read(settings, settings.topic) == []


async def _produce_with_headers(settings: Settings, values: list[tuple[bytes, bytes]]) -> None:
    """Produce (value, trace id) pairs as a producer that sets its own header would."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(settings.topic, value, headers=[("trace-id", trace)])
            for value, trace in values
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def test_replaying_twice_with_the_processor_running_sends_each_record_once(
    stack: StackEndpoints,
    new_topic: NewTopicFactory,
    unique_name: UniqueName,
    mongo_db: Any,
    kafka_admin: Any,
) -> None:
    settings = settings_for(stack, await new_topic(3), mongo_db.name, unique_name("group"))
    sms = [sms_value(n) for n in range(12)]
    values = [(orjson.dumps(s), f"t-{n}".encode()) for n, s in enumerate(sms)]
    await _produce_with_headers(settings, [*values, (b"{not json", b"t-x"), (b"", b"t-y")])
    processor = ScriptedProcessor(permanent={s["id"] for s in sms})

    async def dlq_has(count: int) -> list[Any]:
        records = await _read(settings, settings.dlq_topic)
        return records if len(records) >= count else []

    async def settled() -> bool:
        ends = await _read(settings, settings.topic)
        done = await committed(kafka_admin, settings.group_id, settings.topic)
        return sum(done.values()) == len(ends)

    async with running(settings, processor):
        first = await eventually(lambda: dlq_has(14), what="14 records in the DLQ")

        code, out, err = await _dlq_cli("replay", settings=settings)
        assert (code, err) == (0, "")
        assert out.splitlines()[:2] == [
            f"replayed 12, skipped 2 ({settings.dlq_topic} -> {settings.topic})",
            "  replayed 12 http_422",
        ]
        second = await eventually(lambda: dlq_has(26), what="26 records in the DLQ")

        code, out, err = await _dlq_cli("replay", settings=settings)
        assert (code, err) == (0, "")
        assert out.splitlines()[0].startswith("replayed 0, skipped 26"), out
        await eventually(settled, what="the main topic committed to its end")

    assert len(await _read(settings, settings.topic)) == 14 + 12
    assert len(await _read(settings, settings.dlq_topic)) == 26
    assert max(processor.attempts.values()) == 2
    by_position = {f"dlq:{r.partition}:{r.offset}": r for r in first}
    came_back = [r for r in second if f"dlq:{r.partition}:{r.offset}" not in by_position]
    assert len(came_back) == 12
    for record in came_back:
        failure = Failure.from_headers(record.headers)
        assert failure is not None
        assert failure.origin.replayed_from is not None
        source = by_position[failure.origin.replayed_from]
        before = Failure.from_headers(source.headers)
        assert before is not None
        assert foreign_headers(record.headers) == foreign_headers(source.headers)
        assert foreign_headers(record.headers)[0][0] == "trace-id"
        assert record.value == source.value
        assert (failure.attempt, before.attempt) == (2, 1)
        assert failure.origin.topic == settings.topic
        assert (failure.origin.partition, failure.origin.offset) == (
            before.origin.partition,
            before.origin.offset,
        )
        assert failure.first_failed_at == before.first_failed_at


async def test_a_bad_setting_is_named_before_anything_is_attempted(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName
) -> None:
    settings = await _settings(stack, new_topic, unique_name)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream", "dlq", "replay",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(settings) | {"STREAM_RETRY_DELAYS": "soon"},
    )  # fmt: skip
    async with asyncio.timeout(CLI_DEADLINE_S):
        out, err = await process.communicate()

    assert (process.returncode, out) == (2, b"")
    assert err.decode().startswith("stream dlq: configuration error: STREAM_RETRY_DELAYS: ")
