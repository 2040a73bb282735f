"""Records as other producers write them, against the real broker: every codec from the
official Java client, transactions (committed, aborted, open), headers, and every
Kafka-legal oddity (null key and value, null header values, a header key that is not
UTF-8, both timestamp types). Each test ends with the ledger: stored once, none of the
aborted, the DLQ holding only what is at fault, committed offset at the log end, lag 0.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from java_producer import JavaProducer, send_line
from pipeline_support import produce, read_topic, running, settings_for, sms_value
from prometheus_client import REGISTRY
from support import eventually

from stream.adapters.raw_records import GroupConsumer
from stream.config import Settings
from stream.engine.failures import (
    ERROR_CLASS,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    REPLAYED_FROM,
    VALUE_NULL,
    header,
)
from stream.tools.dlq import replay_dlq

pytestmark = pytest.mark.stack

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def sms_bytes(n: int, prefix: str) -> bytes:
    return orjson.dumps(sms_value(n, prefix))


async def high_watermarks(kafka_admin: Any, bootstrap: str, topic: str,
                          ) -> dict[TopicPartition, int]:
    """Log end offsets (high watermarks: a read_uncommitted client's end offsets)."""
    (described,) = await kafka_admin.describe_topics([topic])
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def settled_at_log_end(kafka_admin: Any, settings: Settings) -> None:
    """Committed offset == log end and the lag gauge 0 on every partition of the topic."""
    ends = await high_watermarks(kafka_admin, settings.kafka_bootstrap, settings.topic)

    async def done() -> bool:
        offsets = await kafka_admin.list_consumer_group_offsets(settings.group_id)
        committed = {tp: meta.offset for tp, meta in offsets.items() if tp.topic == settings.topic}
        lags = [lag(tp) for tp, end in ends.items() if end > 0]
        return all(committed.get(tp, 0) == end for tp, end in ends.items()) and lags == [0] * len(
            lags
        )

    await eventually(done, within=30, what=f"committed == log end {ends} and lag 0")


def lag(tp: TopicPartition) -> float | None:
    return REGISTRY.get_sample_value(
        "stream_consumer_lag", {"topic": tp.topic, "partition": str(tp.partition)}
    )


def open_transaction_offsets(tp: TopicPartition) -> float | None:
    return REGISTRY.get_sample_value(
        "stream_consumer_open_transaction_offsets",
        {"topic": tp.topic, "partition": str(tp.partition)},
    )


@pytest.fixture
async def env(stack: Any, new_topic: Any, mongo_db: Any, unique_name: Any) -> dict[str, Any]:
    topic = await new_topic(partitions=2)
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"))
    return {"settings": settings, "collection": mongo_db["messages"]}


async def stored_ids(collection: Any) -> list[str]:
    return [doc["_id"] async for doc in collection.find({}, {"_id": 1})]


async def test_every_codec_of_the_java_client_is_read_from_one_mixed_topic(
    env: dict[str, Any], kafka_admin: Any
) -> None:
    settings, collection = env["settings"], env["collection"]
    commands = []
    for codec in CODECS:
        commands.append(f"config compression.type={codec}")
        commands += [send_line(settings.topic, None, sms_bytes(n, codec)) for n in range(20)]
        commands.append("flush")
    async with JavaProducer(settings.kafka_bootstrap, **{"linger.ms": "20"}) as producer:
        await producer.run(*commands)
    async with running(settings):
        await eventually(
            lambda: _count(collection, 100), within=30, what="100 SMS of five codecs stored"
        )
        await settled_at_log_end(kafka_admin, settings)
    ids = await stored_ids(collection)
    assert sorted(ids) == sorted(f"{c}-{n}" for c in CODECS for n in range(20))
    assert await read_topic(settings.kafka_bootstrap, settings.dlq_topic) == []


async def test_our_own_copies_are_compressed_with_the_setting(
    env: dict[str, Any], kafka_admin: Any
) -> None:
    settings = env["settings"].replace(kafka_compression="lz4")
    await produce(settings.kafka_bootstrap, settings.topic, [b"{not json"] * 30)
    async with running(settings):
        dead = await eventually(
            lambda: _topic_has(settings.kafka_bootstrap, settings.dlq_topic, 30),
            within=30, what="30 dead letters",
        )
        await settled_at_log_end(kafka_admin, settings)
    assert {r.value for r in dead} == {b"{not json"}
    assert await batch_codecs(settings, settings.dlq_topic) == {3}  # lz4


async def batch_codecs(settings: Settings, topic: str) -> set[int]:
    """The compression codec ids of the record batches of `topic` (read raw: aiokafka
    does not say how a batch it hands over was compressed)."""
    consumer = GroupConsumer(isolation_level="read_uncommitted",
                             bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    codecs: set[int] = set()
    try:
        client = consumer._client
        await client.force_metadata_update()
        for partition in client.cluster.partitions_for_topic(topic):
            node = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            response = await client.send(
                node, FetchRequest(0, 1, 1 << 20, 0, [(topic, [(partition, 0, 1 << 20)])])
            )
            data, pos = response.topics[0][1][0][-1] or b"", 0
            while pos + 61 <= len(data):
                codecs.add(int.from_bytes(data[pos + 21 : pos + 23], "big") & 0x07)
                pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "big")
    finally:
        await consumer.stop()
    return codecs


async def test_aborted_transactions_are_never_stored_and_markers_are_committed_past(
    env: dict[str, Any], kafka_admin: Any, unique_name: Any
) -> None:
    settings, collection = env["settings"], env["collection"]
    topic = settings.topic
    commands = [
        "begin", *(send_line(topic, None, sms_bytes(n, "committed")) for n in range(60)),
        "commit",
        "begin", *(send_line(topic, None, sms_bytes(n, "aborted")) for n in range(200)),
        "abort",
        "begin", *(send_line(topic, None, sms_bytes(n, "later")) for n in range(40)),
        "commit",
    ]
    java = JavaProducer(settings.kafka_bootstrap, **{"transactional.id": unique_name("tx")})
    async with java as producer:
        await producer.run(*commands)
    async with running(settings):
        await eventually(lambda: _count(collection, 100), within=30, what="100 committed SMS")
        await settled_at_log_end(kafka_admin, settings)
    ids = await stored_ids(collection)
    assert len(ids) == 100
    assert not [i for i in ids if i.startswith("aborted")]
    assert await read_topic(settings.kafka_bootstrap, settings.dlq_topic) == []


async def test_an_open_transaction_holds_what_follows_and_shows_in_the_gauges(
    stack: Any, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any
) -> None:
    topic = await new_topic(partitions=1)
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"))
    collection, tp = mongo_db["messages"], TopicPartition(topic, 0)
    java = JavaProducer(settings.kafka_bootstrap, **{"transactional.id": unique_name("tx")})
    async with java as producer:
        await producer.run("begin", *(send_line(topic, None, sms_bytes(n, "open"))
                                      for n in range(10)), "flush")
        await produce(settings.kafka_bootstrap, topic, [sms_value(n, "after") for n in range(5)])
        async with running(settings) as member:
            await eventually(
                lambda: _gauge_is(open_transaction_offsets, tp, 15), within=30,
                what="15 offsets held behind the open transaction",
            )
            await eventually(lambda: _gauge_is(lag, tp, 15), what="lag 15 from the earliest")
            assert await collection.count_documents({}) == 0
        assert member.result() is True  # the drain waited for nothing that cannot come
        await producer.run("commit")
        async with running(settings):
            await eventually(lambda: _count(collection, 15), within=30, what="all 15 stored")
            await settled_at_log_end(kafka_admin, settings)
            assert open_transaction_offsets(tp) == 0


async def test_headers_of_the_java_client_are_kept_and_null_ones_tolerated(
    env: dict[str, Any], kafka_admin: Any
) -> None:
    settings, collection = env["settings"], env["collection"]
    topic = settings.topic
    foreign = [("trace-id", b"abc"), ("empty", b""), ("nothing", None)]
    odd_ours = [("stream.attempt", None), ("stream.original.topic", None)]
    commands = [
        *(send_line(topic, b"k", sms_bytes(n, "h"), [*foreign, *odd_ours], timestamp_ms=0)
          for n in range(10)),
        send_line(topic, b"k", b"{not json", foreign),
        "flush",
    ]
    async with JavaProducer(settings.kafka_bootstrap) as producer:
        await producer.run(*commands)
    async with running(settings):
        await eventually(lambda: _count(collection, 10), within=30, what="10 stored")
        (dead,) = await eventually(
            lambda: _topic_has(settings.kafka_bootstrap, settings.dlq_topic, 1), what="1 DLQ"
        )
        await settled_at_log_end(kafka_admin, settings)
    assert await collection.count_documents({"attempts": 1}) == 10
    assert [h for h in dead.headers if not h[0].startswith("stream.")] == [
        ("trace-id", b"abc"), ("empty", b""), ("nothing", None)
    ]
    assert header(dead.headers, ERROR_CLASS) == "invalid_json"


async def test_null_key_and_value_is_dead_lettered_and_replayed_as_null(
    env: dict[str, Any], kafka_admin: Any
) -> None:
    settings, collection = env["settings"], env["collection"]
    commands = [
        send_line(settings.topic, None, None, [("trace-id", b"t1")]),
        *(send_line(settings.topic, None, sms_bytes(n, "ok")) for n in range(5)),
        "flush",
    ]
    async with JavaProducer(settings.kafka_bootstrap) as producer:
        await producer.run(*commands)
    async with running(settings):
        await eventually(lambda: _count(collection, 5), within=30, what="5 stored")
        (dead,) = await eventually(
            lambda: _topic_has(settings.kafka_bootstrap, settings.dlq_topic, 1), what="1 DLQ"
        )
        await settled_at_log_end(kafka_admin, settings)
        assert (dead.key, dead.value, header(dead.headers, VALUE_NULL)) == (None, b"", "true")
        result = await replay_dlq(settings, reason="empty")
        assert sum(result.replayed.values()) == 1
        dead_twice = await eventually(
            lambda: _topic_has(settings.kafka_bootstrap, settings.dlq_topic, 2),
            within=30, what="the replayed null dead-lettered again",
        )
        await settled_at_log_end(kafka_admin, settings)
    replayed = [r for r in await read_topic(settings.kafka_bootstrap, settings.topic)
                if header(r.headers, REPLAYED_FROM)]
    assert [(r.key, r.value, header(r.headers, "trace-id")) for r in replayed] == [
        (None, None, "t1")
    ]
    assert len(dead_twice) == 2
    assert await collection.count_documents({}) == 5


RAW_PRODUCER = """
import asyncio, sys
from aiokafka import AIOKafkaProducer

class RawKey(str):
    '''A header key whose bytes on the wire are not UTF-8 (aiokafka's pure-Python builder
    asks the key to encode itself).'''
    def encode(self, *args, **kwargs):
        return b"\\xff\\xfeid"

async def main(bootstrap, topic, good, bad):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50,
                                compression_type="lz4")
    await producer.start()
    try:
        futures = []
        for n, value in enumerate(good):
            headers = [(RawKey("x"), b"v")] if n in bad else [("fine", b"v")]
            futures.append(await producer.send(topic, value.encode(), partition=0,
                                               headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

bootstrap, topic, values, bad = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
asyncio.run(main(bootstrap, topic, values.split("\\n"), {int(b) for b in bad.split(",")}))
"""


async def test_a_batch_with_a_header_key_that_is_not_utf8_is_read_whole(
    env: dict[str, Any], kafka_admin: Any
) -> None:
    settings, collection = env["settings"], env["collection"]
    values = [sms_bytes(n, "raw").decode() for n in range(12)]
    values[7] = "{not json"
    bad = {3, 7}
    # Other partition: records the failing fetch may have taken along must not be lost.
    await produce(settings.kafka_bootstrap, settings.topic,
                  [sms_value(n, "other") for n in range(8)], partition=1)
    env_vars = {**os.environ, "AIOKAFKA_NO_EXTENSIONS": "1"}
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", RAW_PRODUCER, settings.kafka_bootstrap, settings.topic,
         "\n".join(values), ",".join(map(str, bad))],
        env=env_vars, check=True, timeout=60,
    )
    async with running(settings):
        await eventually(lambda: _count(collection, 19), within=30, what="19 SMS stored")
        (dead,) = await eventually(
            lambda: _topic_has(settings.kafka_bootstrap, settings.dlq_topic, 1), what="1 DLQ"
        )
        await settled_at_log_end(kafka_admin, settings)
    assert set(await stored_ids(collection)) == {
        f"raw-{n}" for n in range(12) if n != 7} | {f"other-{n}" for n in range(8)}
    assert (header(dead.headers, ORIGINAL_PARTITION), header(dead.headers, ORIGINAL_OFFSET),
            header(dead.headers, ERROR_CLASS)) == ("0", "7", "invalid_json")
    assert dead.value == b"{not json"
    assert ("\\xff\\xfeid", b"v") in dead.headers


async def test_log_append_time_records_are_processed(
    stack: Any, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any
) -> None:
    topic = await new_topic(partitions=1, configs={"message.timestamp.type": "LogAppendTime"})
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"))
    async with JavaProducer(settings.kafka_bootstrap) as producer:
        await producer.run(
            *(send_line(topic, None, sms_bytes(n, "t"), timestamp_ms=0) for n in range(5)),
            "flush",
        )
    async with running(settings):
        await eventually(lambda: _count(mongo_db["messages"], 5), within=30, what="5 stored")
        await settled_at_log_end(kafka_admin, settings)
    records = await read_topic(settings.kafka_bootstrap, topic)
    assert {r.timestamp_type for r in records} == {1}


async def _count(collection: Any, expected: int) -> bool:
    return bool(await collection.count_documents({}) == expected)


async def _topic_has(bootstrap: str, topic: str, expected: int) -> list[Any] | None:
    records = await read_topic(bootstrap, topic)
    assert len(records) <= expected, f"{len(records)} records in {topic}, expected {expected}"
    return records if len(records) == expected else None


async def _gauge_is(read: Any, tp: TopicPartition, expected: float) -> bool:
    return bool(read(tp) == expected)
