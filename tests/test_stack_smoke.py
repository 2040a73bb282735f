"""Smoke tests of the real local stack: the broker and Mongo behaviour the processor relies on.

If one of these fails, the stack (or the server behind STREAM_KAFKA_BOOTSTRAP /
STREAM_MONGO_URL) is at fault, not the processor.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from stream.devkit.stack import (
    KAFKA_ENV,
    MONGO_ENV,
    MongoServer,
    StackEndpoints,
    down,
    ensure_up,
    kill,
    status,
)
from stream.devkit.stack.process import port_is_free, spawn, stop

MongoDoc = dict[str, Any]
NewTopicFactory = Callable[..., Awaitable[str]]
UniqueName = Callable[..., str]

# Bounds on waiting for records or a CLI; each is met in well under a second when healthy.
CONSUME_DEADLINE_S = 30.0
CLI_DEADLINE_S = 60.0
# A killed broker answers again within this, JVM start and log recovery included.
BROKER_RESTART_BOUND_S = 30.0


async def _consume(consumer: AIOKafkaConsumer, count: int) -> list[Any]:
    records: list[Any] = []
    async with asyncio.timeout(CONSUME_DEADLINE_S):
        while len(records) < count:
            batch = await consumer.getmany(timeout_ms=200)
            for partition_records in batch.values():
                records.extend(partition_records)
    return records


def _group_consumer(stack: StackEndpoints, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def test_kafka_group_consumes_and_commits_manually(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName
) -> None:
    topic = await new_topic(partitions=3)
    group = unique_name("group")
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        last_offset: dict[int, int] = {}
        for i in range(30):
            sent = await producer.send_and_wait(topic, f"m{i}".encode(), key=f"k{i}".encode())
            last_offset[sent.partition] = max(last_offset.get(sent.partition, -1), sent.offset)

        consumer = _group_consumer(stack, topic, group)
        await consumer.start()
        try:
            records = await _consume(consumer, 30)
            assert sorted(r.value for r in records) == sorted(f"m{i}".encode() for i in range(30))
            await consumer.commit()
            for partition, offset in last_offset.items():
                assert await consumer.committed(TopicPartition(topic, partition)) == offset + 1
        finally:
            await consumer.stop()

        # The group resumes after the committed offsets: only the new record comes back.
        await producer.send_and_wait(topic, b"after-commit", key=b"k0")
        consumer = _group_consumer(stack, topic, group)
        await consumer.start()
        try:
            (record,) = await _consume(consumer, 1)
            assert record.value == b"after-commit"
        finally:
            await consumer.stop()
    finally:
        await producer.stop()


async def test_mongo_unique_index_rejects_duplicates(mongo_db: AsyncDatabase[MongoDoc]) -> None:
    messages = mongo_db["messages"]
    await messages.create_index("sms_id", unique=True)
    await messages.insert_one({"sms_id": "a", "body": "hi"})
    with pytest.raises(DuplicateKeyError) as duplicate:
        await messages.insert_one({"sms_id": "a", "body": "again"})
    assert duplicate.value.code == 11000

    with pytest.raises(BulkWriteError) as bulk:
        await messages.insert_many(
            [{"sms_id": "a"}, {"sms_id": "b"}, {"sms_id": "b"}], ordered=False
        )
    codes = [error["code"] for error in bulk.value.details["writeErrors"]]
    assert codes == [11000, 11000]
    assert await messages.count_documents({}) == 2


async def test_mongo_bulk_upsert_is_idempotent(mongo_db: AsyncDatabase[MongoDoc]) -> None:
    messages = mongo_db["messages"]
    upserts = [UpdateOne({"_id": f"sms{i}"}, {"$set": {"n": i}}, upsert=True) for i in range(10)]

    first = await messages.bulk_write(upserts, ordered=False)
    again = await messages.bulk_write(upserts, ordered=False)

    assert (first.upserted_count, first.matched_count) == (10, 0)
    assert (again.upserted_count, again.matched_count) == (0, 10)
    assert await messages.count_documents({}) == 10
    assert await messages.count_documents({"n": {"$gte": 7}}) == 3
    found = [doc async for doc in messages.find({"n": {"$lt": 3}}).sort("n")]
    assert found == [{"_id": f"sms{i}", "n": i} for i in range(3)]


async def test_dedicated_mongo_goes_away_and_comes_back(dedicated_mongo: MongoServer) -> None:
    client: AsyncMongoClient[MongoDoc] = AsyncMongoClient(
        dedicated_mongo.url, serverSelectionTimeoutMS=500
    )
    try:
        await client.db.items.insert_one({"_id": 1})
        dedicated_mongo.stop()
        with pytest.raises(PyMongoError):
            await client.db.items.find_one({"_id": 1})
        await dedicated_mongo.start()
        assert await client.db.items.find_one({"_id": 1}) == {"_id": 1}
    finally:
        await client.close()


async def _stack_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream", "stack", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    async with asyncio.timeout(CLI_DEADLINE_S):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_status_cli_reports_a_healthy_stack(stack: StackEndpoints, stack_dir: Path) -> None:
    code, output = await _stack_cli("status", "--dir", str(stack_dir))

    assert code == 0, output
    kafka_line, mongo_line = output.splitlines()
    assert kafka_line.startswith("kafka")
    assert "answers metadata" in kafka_line
    assert stack.kafka_bootstrap in kafka_line
    assert mongo_line.startswith("mongo")
    assert "answers ping" in mongo_line
    assert stack.mongo_url in mongo_line
    if not os.environ.get(KAFKA_ENV):
        assert "java kafka.Kafka" in kafka_line
    if not os.environ.get(MONGO_ENV):
        assert "running pid" in mongo_line


async def test_status_cli_fails_for_a_stack_never_started(tmp_path: Path) -> None:
    local_only = {k: v for k, v in os.environ.items() if k not in (KAFKA_ENV, MONGO_ENV)}

    code, output = await _stack_cli("status", "--dir", str(tmp_path / "none"), env=local_only)

    assert code == 1
    assert output.count("never started") == 2, output

# Spawns in a row: a spawn must not look dead right after Popen returns.
SPAWNS = 20


def test_a_service_just_spawned_is_seen_running(tmp_path: Path) -> None:
    for n in range(SPAWNS):
        needle = f"service-{n}"
        proc = spawn([sys.executable, "-c", "import time; time.sleep(60)", needle],
                     log=tmp_path / "service.log", needle=needle)
        try:
            assert proc.running(), f"spawn {n} looked dead at once"
        finally:
            stop(proc, grace_s=0)


def test_a_port_in_time_wait_is_free_but_a_listening_one_is_not() -> None:
    # The side that closes first keeps TIME_WAIT: here the server, as after its kill -9.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()
            client.recv(1)  # the FIN arrived: the server side is in TIME_WAIT once we close
        assert not port_is_free(port)
    assert port_is_free(port)


async def test_killed_broker_comes_back_on_its_port_and_clients_reconnect(
    stack: StackEndpoints, tmp_path: Path
) -> None:
    # A Kafka of this test's own (the session's broker must not be killed); Mongo is shared.
    stack_dir, env = tmp_path / "stack", {MONGO_ENV: stack.mongo_url}
    first = await ensure_up(stack_dir, env=env)
    producer = AIOKafkaProducer(bootstrap_servers=first.kafka_bootstrap, acks="all")
    consumer = _group_consumer(first, "events", "group")
    try:
        await producer.start()
        await producer.send_and_wait("events", b"before")
        await consumer.start()
        assert [r.value for r in await _consume(consumer, 1)] == [b"before"]

        await asyncio.to_thread(kill, stack_dir, "kafka")
        # As from a shell that exported the env file: the address is still the stack's own.
        exported = env | {KAFKA_ENV: first.kafka_bootstrap}
        again = await ensure_up(stack_dir, env=exported, timeout_s=BROKER_RESTART_BOUND_S)

        assert again.started
        assert again.kafka_bootstrap == first.kafka_bootstrap
        async with asyncio.timeout(CONSUME_DEADLINE_S):
            await producer.send_and_wait("events", b"after")
        assert [r.value for r in await _consume(consumer, 1)] == [b"after"]
    finally:
        await consumer.stop()
        await producer.stop()
        await asyncio.to_thread(down, stack_dir)


async def test_settings_naming_the_stacks_own_listeners_are_not_taken_for_external_servers(
    tmp_path: Path,
) -> None:
    """A shell that exported the stack's env file (or a secure stack's env.sasl_ssl) still
    names the stack's own services: `up` and `status` treat them as the stack's."""
    state = {
        "kafka": {"kind": "kafka", "ports": [41001, 41002, 41003, 41004],
                  "endpoint": "127.0.0.1:41001", "proc": None},
        "mongo": {"kind": "ferretdb", "ports": [41005], "endpoint": "mongodb://127.0.0.1:41005/",
                  "proc": None},
    }
    (tmp_path / "state.json").write_text(json.dumps(state))
    for bootstrap in ("127.0.0.1:41001", "127.0.0.1:41003", "127.0.0.1:41004"):
        kafka_status, mongo_status = await status(
            tmp_path, env={KAFKA_ENV: bootstrap, MONGO_ENV: "mongodb://127.0.0.1:41005/"})
        assert not kafka_status.external, bootstrap
        assert not mongo_status.external
    other, _ = await status(tmp_path, env={KAFKA_ENV: "127.0.0.1:41009"})
    assert other.external

