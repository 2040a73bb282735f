"""`stream dlq list|replay` against the real broker, on records dead-lettered the way the
processor does it (`Delivery.failed` published by a `Router`)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from pipeline_support import read_topic

from stream.adapters.kafka import new_producer
from stream.adapters.publisher import Router
from stream.config import Settings
from stream.devkit.stack import StackEndpoints
from stream.engine.failures import Delivery, Failure, Origin
from stream.observability.logs import mask

NewTopicFactory = Callable[..., Awaitable[str]]
UniqueName = Callable[..., str]

# Bounds on a CLI run and on reading a topic back; both take a second or two when healthy.
CLI_DEADLINE_S = 120.0
READ_DEADLINE_S = 30.0

SENDER = "+254798765432"
BODY = "Your M-PESA PIN reset code is 482913"
VALID = orjson.dumps({"id": "sms-4", "sender": SENDER, "body": BODY, "received_at": "2026-01-01"})
# (error class, key, value, extra headers) of each dead-lettered record.
FAILED: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = [
    ("invalid_json", SENDER.encode(), b'{"id": "sms-1", "sender": "' + SENDER.encode(), []),
    ("invalid_json", None, b"\xffnot json", [("trace-id", b"t-2")]),
    ("invalid_field", SENDER.encode(), VALID.replace(b"2026-01-01", b"yesterday"), []),
    ("transient", SENDER.encode(), VALID, []),
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


async def _dead_letter(settings: Settings) -> None:
    """Publish FAILED to the DLQ as the processor would; `attempt` is the position + 1."""
    deliveries = []
    for n, (error_class, key, value, extra) in enumerate(FAILED):
        failure = Failure(
            origin=Origin(settings.topic, n % 3, 100 + n),
            attempt=n + 1,
            error_class=error_class,
            error_message=f"{error_class} in record {n}",
            first_failed_at=datetime.now(UTC),
        )
        failed = Delivery.failed(
            topic=settings.dlq_topic, key=key, value=value, original_headers=(), failure=failure
        )
        deliveries.append(dataclasses.replace(failed, headers=[*failed.headers, *extra]))
    producer = new_producer(settings)
    await producer.start()
    try:
        await Router(producer).publish(deliveries)
    finally:
        await producer.stop()


async def _dlq_cli(*args: str, settings: Settings) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")} | {
        "STREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STREAM_TOPIC": settings.topic,
        "STREAM_GROUP_ID": settings.group_id,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream", "dlq", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip
    async with asyncio.timeout(CLI_DEADLINE_S):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _read(settings: Settings, topic: str) -> list[Any]:
    async with asyncio.timeout(READ_DEADLINE_S):
        return await read_topic(settings.kafka_bootstrap, topic)


async def test_list_shows_every_record_with_sender_and_body_masked(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName
) -> None:
    settings = await _settings(stack, new_topic, unique_name)
    await _dead_letter(settings)

    code, out, err = await _dlq_cli("list", "--json", settings=settings)

    assert code == 0, err
    assert SENDER not in out
    assert "PIN reset" not in out
    entries = sorted((orjson.loads(line) for line in out.splitlines()), key=lambda e: e["attempt"])
    assert [e["error_class"] for e in entries] == [f[0] for f in FAILED]
    assert [e["sms_id"] for e in entries] == [None, None, "sms-4", "sms-4"]
    assert [e["sender"] for e in entries] == [None, None, mask(SENDER), mask(SENDER)]
    assert entries[3]["body"] == mask(BODY)
    assert entries[2] | {"partition": 0, "offset": 0, "first_failed_at": ""} == {
        "partition": 0,
        "offset": 0,
        "error_class": "invalid_field",
        "error_message": "invalid_field in record 2",
        "attempt": 3,
        "original_topic": settings.topic,
        "original_partition": 2,
        "original_offset": 102,
        "first_failed_at": "",
        "sms_id": "sms-4",
        "sender": mask(SENDER),
        "body": mask(BODY),
    }
    dlq = {(r.partition, r.offset) for r in await _read(settings, settings.dlq_topic)}
    assert {(e["partition"], e["offset"]) for e in entries} == dlq

    code, out, err = await _dlq_cli("list", "--limit", "2", settings=settings)
    assert code == 0, err
    *lines, summary = out.splitlines()
    assert len(lines) == 2
    assert summary == f"2 record(s) shown from {settings.dlq_topic}"
    assert SENDER not in out


async def test_list_returns_at_once_on_an_empty_dlq_and_fails_on_a_missing_one(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName
) -> None:
    settings = await _settings(stack, new_topic, unique_name)

    code, out, err = await _dlq_cli("list", settings=settings)
    assert (code, out, err) == (0, f"0 record(s) shown from {settings.dlq_topic}\n", "")

    missing = settings.replace(topic=unique_name("absent"))
    code, out, err = await _dlq_cli("list", settings=missing)
    assert code == 1
    assert f"topic {missing.dlq_topic} does not exist" in err


async def test_replay_by_reason_sends_original_bytes_once(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName
) -> None:
    settings = await _settings(stack, new_topic, unique_name)
    await _dead_letter(settings)
    dlq = await _read(settings, settings.dlq_topic)

    code, out, err = await _dlq_cli(
        "replay", "--reason", "invalid_json", "--dry-run", settings=settings
    )
    assert (code, err) == (0, "")
    assert out.startswith("would replay 2, skipped 2"), out
    assert await _read(settings, settings.topic) == []

    code, out, err = await _dlq_cli("replay", "--reason", "invalid_json", settings=settings)
    assert (code, err) == (0, "")
    assert out.startswith("replayed 2, skipped 2"), out
    replayed = await _read(settings, settings.topic)
    origin = {(r.key, r.value): r for r in dlq if r.value in (FAILED[0][2], FAILED[1][2])}
    assert sorted((r.key or b"", r.value) for r in replayed) == sorted(
        (key or b"", value) for key, value in origin
    )
    for record in replayed:
        source = origin[(record.key, record.value)]
        extra = [(k, v) for k, v in source.headers if not k.startswith("stream.")]
        assert list(record.headers) == [
            *extra,
            ("stream.replayed-from", f"dlq:{source.partition}:{source.offset}".encode()),
        ]
    assert [h for r in replayed for h in r.headers if h[0] == "trace-id"] == [("trace-id", b"t-2")]

    code, out, err = await _dlq_cli("replay", "--reason", "invalid_json", settings=settings)
    assert (code, err) == (0, "")
    assert out.startswith("replayed 0, skipped 0"), out
    assert len(await _read(settings, settings.topic)) == 2

    # Another error class has a replay position of its own: it was not skipped for good.
    code, out, err = await _dlq_cli("replay", "--reason", "transient", settings=settings)
    assert (code, err) == (0, "")
    assert out.startswith("replayed 1, skipped 3"), out
    assert sorted(r.value == VALID for r in await _read(settings, settings.topic)) == [
        False,
        False,
        True,
    ]
