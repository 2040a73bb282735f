"""The pipeline against the real broker and Mongo server: what is stored, routed, committed."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from pipeline_support import committed, produce, read_topic, running, settings_for, sms_value
from support import eventually

from stream.app import serve
from stream.devkit.fakes import ScriptedProcessor
from stream.engine.failures import (
    ATTEMPT,
    ERROR_CLASS,
    ERROR_MESSAGE,
    FIRST_FAILED_AT,
    NOT_BEFORE,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
    VALUE_OMITTED,
    header,
)
from stream.processors.http import HttpProcessor

pytestmark = pytest.mark.stack


@pytest.fixture
async def env(stack: Any, new_topic: Any, mongo_db: Any, unique_name: Any) -> dict[str, Any]:
    topic = await new_topic(partitions=3)
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"))
    return {"settings": settings, "db": mongo_db, "collection": mongo_db["messages"]}


async def test_happy_path_stores_every_sms_and_commits_to_the_end(
    env: dict[str, Any], kafka_admin: Any
) -> None:
    settings, collection = env["settings"], env["collection"]
    values = [sms_value(n) for n in range(300)]
    await produce(settings.kafka_bootstrap, settings.topic, values)
    async with running(settings):
        await eventually(lambda: _count_is(collection, 300), what="300 documents")
        offsets = await eventually(
            lambda: _committed_total(kafka_admin, settings, 300), what="offsets committed to 300"
        )
    assert sum(offsets.values()) == 300
    doc = await collection.find_one({"_id": "sms-1"})
    assert doc is not None
    assert doc["sender"] == values[1]["sender"]
    assert doc["body"] == values[1]["body"]
    assert doc["parsed"]["category"] == "otp"
    assert doc["processor"] == "builtin"
    assert doc["attempts"] == 1
    assert doc["source"]["topic"] == settings.topic
    assert {"processed_at", "received_at"} <= doc.keys()
    assert await read_topic(settings.kafka_bootstrap, settings.dlq_topic) == []


async def test_duplicates_in_the_input_are_stored_once(
    env: dict[str, Any], kafka_admin: Any
) -> None:
    settings, collection = env["settings"], env["collection"]
    values = [sms_value(n % 40) for n in range(120)]
    await produce(settings.kafka_bootstrap, settings.topic, values)
    async with running(settings):
        await eventually(lambda: _committed_total(kafka_admin, settings, 120), what="all committed")
    assert await collection.count_documents({}) == 40


async def test_poison_records_go_to_the_dlq_with_reason_and_good_ones_are_stored(
    env: dict[str, Any], kafka_admin: Any
) -> None:
    settings, collection = env["settings"], env["collection"]
    poison = [
        b"{not json",
        b"\xff\xfe\xfd",
        orjson.dumps({"id": "x", "sender": "+1", "body": 5, "received_at": "2026-01-01"}),
        orjson.dumps({"sender": "+1", "body": "hi", "received_at": "2026-01-01"}),
        b"x" * (settings.max_sms_bytes + 1),
    ]
    good = [sms_value(n) for n in range(50)]
    await produce(
        settings.kafka_bootstrap, settings.topic, [*good[:25], *poison, *good[25:]], partition=0
    )
    async with running(settings):
        await eventually(lambda: _committed_total(kafka_admin, settings, 55), what="all committed")
    assert await collection.count_documents({}) == 50
    dead = await read_topic(settings.kafka_bootstrap, settings.dlq_topic)
    assert sorted(record.value for record in dead) == sorted(poison)
    reasons = {header(r.headers, ERROR_CLASS) for r in dead}
    assert reasons == {"invalid_json", "invalid_utf8", "invalid_field", "missing_field", "oversize"}
    first = next(r for r in dead if r.value == b"{not json")
    assert header(first.headers, ORIGINAL_TOPIC) == settings.topic
    assert header(first.headers, ORIGINAL_PARTITION) == "0"
    assert header(first.headers, ORIGINAL_OFFSET) == "25"
    assert header(first.headers, ATTEMPT) == "1"
    assert header(first.headers, ERROR_MESSAGE)
    assert header(first.headers, FIRST_FAILED_AT)
    assert header(first.headers, NOT_BEFORE) is None


async def test_transient_failure_goes_through_retry_topic_then_succeeds(
    env: dict[str, Any], kafka_admin: Any
) -> None:
    settings, collection = env["settings"], env["collection"]
    processor = ScriptedProcessor(transient={"sms-3": 1, "sms-7": 2})
    await produce(settings.kafka_bootstrap, settings.topic, [sms_value(n) for n in range(10)])
    async with running(settings, processor):
        await eventually(lambda: _count_is(collection, 10), what="10 documents")
    assert (await collection.find_one({"_id": "sms-3"}) or {})["attempts"] == 2
    assert (await collection.find_one({"_id": "sms-7"}) or {})["attempts"] == 3
    assert (await collection.find_one({"_id": "sms-1"}) or {})["attempts"] == 1
    retry_1 = await read_topic(settings.kafka_bootstrap, settings.retry_topics[0])
    retry_2 = await read_topic(settings.kafka_bootstrap, settings.retry_topics[1])
    assert sorted(orjson.loads(r.value)["id"] for r in retry_1) == ["sms-3", "sms-7"]
    assert [orjson.loads(r.value)["id"] for r in retry_2] == ["sms-7"]
    assert all(header(r.headers, NOT_BEFORE) for r in retry_1 + retry_2)
    assert header(retry_2[0].headers, ATTEMPT) == "2"
    assert header(retry_2[0].headers, ORIGINAL_TOPIC) == settings.topic
    assert await read_topic(settings.kafka_bootstrap, settings.dlq_topic) == []


async def test_always_failing_sms_reaches_the_dlq_after_the_last_retry(
    env: dict[str, Any], kafka_admin: Any
) -> None:
    settings, collection = env["settings"], env["collection"]
    processor = ScriptedProcessor(transient={"sms-2": 99}, permanent={"sms-4"})
    await produce(settings.kafka_bootstrap, settings.topic, [sms_value(n) for n in range(6)])
    async with running(settings, processor):
        dead = await eventually(
            lambda: _records_at_least(settings.kafka_bootstrap, settings.dlq_topic, 2),
            what="2 records in the DLQ",
        )
        await eventually(lambda: _count_is(collection, 4), what="4 documents")
    by_id = {orjson.loads(r.value)["id"]: r for r in dead}
    assert header(by_id["sms-2"].headers, ATTEMPT) == str(1 + len(settings.retry_delays_s))
    assert header(by_id["sms-2"].headers, ERROR_CLASS) == "http_503"
    assert header(by_id["sms-4"].headers, ATTEMPT) == "1"
    assert header(by_id["sms-4"].headers, ERROR_CLASS) == "http_422"
    assert processor.attempts["sms-2"] == 1 + len(settings.retry_delays_s)


async def test_commit_never_passes_an_unsettled_record(
    env: dict[str, Any], kafka_admin: Any
) -> None:
    settings = env["settings"].replace(batch_max=2)
    collection = env["collection"]
    release = asyncio.Event()
    processor = ScriptedProcessor(held={"sms-3": release})
    await produce(
        settings.kafka_bootstrap, settings.topic, [sms_value(n) for n in range(10)], partition=0
    )
    async with running(settings, processor):
        # Batches of 2: the batch holding sms-3 (offsets 2-3) waits; the 4 after it finish.
        await eventually(lambda: _count_is(collection, 8), what="the other batches stored")
        await eventually(
            lambda: _committed_equals(kafka_admin, settings, {0: 2}), what="commit up to 2"
        )
        assert await collection.find_one({"_id": "sms-3"}) is None
        # The later batches settled long ago; the commit still waits for offset 3.
        assert await committed(kafka_admin, settings.group_id, settings.topic) == {0: 2}
        release.set()
        await eventually(
            lambda: _committed_equals(kafka_admin, settings, {0: 10}), what="commit 10"
        )
    assert await collection.count_documents({}) == 10


async def _count_is(collection: Any, expected: int) -> bool:
    return bool(await collection.count_documents({}) == expected)


async def _committed_total(admin: Any, settings: Any, expected: int) -> dict[int, int] | None:
    offsets = await committed(admin, settings.group_id, settings.topic)
    return offsets if sum(offsets.values()) == expected else None


async def _committed_equals(admin: Any, settings: Any, expected: dict[int, int]) -> bool:
    return bool(await committed(admin, settings.group_id, settings.topic) == expected)


async def _records_at_least(bootstrap: str, topic: str, count: int) -> list[Any] | None:
    records = await read_topic(bootstrap, topic)
    return records if len(records) >= count else None


async def test_dlq_copy_over_the_producers_limit_goes_without_its_value(
    stack: Any, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any
) -> None:
    """A record that fitted its topic (allowed 2 MB) but whose DLQ copy is over our
    producer's 1 MiB request limit: the copy goes without its value, saying so."""
    topic = await new_topic(1, configs={"max.message.bytes": "2000000"})
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"))
    big = b"x" * 1_100_000
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                max_request_size=2_000_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, big, headers=[("trace", b"t-1")])
        await producer.send_and_wait(topic, orjson.dumps(sms_value(1)))
    finally:
        await producer.stop()
    async with running(settings):
        await eventually(lambda: _committed_total(kafka_admin, settings, 2), what="both settled")
    (dead,) = await read_topic(settings.kafka_bootstrap, settings.dlq_topic)
    assert dead.value == b""
    assert header(dead.headers, VALUE_OMITTED) == str(len(big))
    assert header(dead.headers, ERROR_CLASS) == "oversize"
    assert header(dead.headers, "trace") == "t-1"
    assert await env_count(mongo_db) == 1


async def env_count(db: Any) -> int:
    count: int = await db["messages"].count_documents({})
    return count


class _BrokenGauges:
    @property
    def state(self) -> Any:
        raise RuntimeError("gauges broken")


class _ProcessorWithBrokenGauges(HttpProcessor):
    @property
    def limiter(self) -> Any:
        return _BrokenGauges()


async def test_a_background_task_that_dies_stops_the_member_which_raises_its_error(
    env: dict[str, Any],
) -> None:
    settings = env["settings"].replace(api_url="http://127.0.0.1:9/parse")  # never called
    processor = _ProcessorWithBrokenGauges(settings)
    try:
        with pytest.raises(RuntimeError, match="gauges broken"):
            await asyncio.wait_for(serve(settings, asyncio.Event(), processor), 60)
    finally:
        await processor.aclose()
