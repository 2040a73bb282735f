"""The sink's errors in the real pipeline: a unique index the SMS clash on, and a Mongo
server refusing every write. Each ends with the ledger: every SMS stored once or in the
DLQ for its own fault, committed offsets at the log end (lag 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.errors import KafkaError
from pipeline_support import (
    StreamProcess,
    committed,
    produce,
    read_topic,
    running,
    settings_for,
    sms_value,
)
from pymongo import AsyncMongoClient
from support import eventually
from test_sink import ferret_table

from stream.devkit.stack import StackEndpoints
from stream.engine.failures import ERROR_CLASS, ERROR_MESSAGE, header

pytestmark = pytest.mark.stack

UNIQUE_SENDER = "sender_unique"


def _clashing(n: int, senders: int) -> dict[str, Any]:
    """SMS `n`, sending from one of `senders` numbers (so it is also keyed by it)."""
    return sms_value(n) | {"sender": f"+2547{n % senders:08d}"}


async def _lag_zero(admin: Any, group: str, topic: str, total: int) -> bool:
    try:
        return sum((await committed(admin, group, topic)).values()) == total
    except KafkaError:  # the group's coordinator is not there yet
        return False


async def _dead(settings: Any) -> dict[str, Any]:
    """DLQ records by SMS id."""
    return {
        orjson.loads(record.value)["id"]: record
        for record in await read_topic(settings.kafka_bootstrap, settings.dlq_topic)
    }


async def test_a_unique_index_on_sender_dead_letters_the_clashes_and_loses_nothing(
    stack: StackEndpoints, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any
) -> None:
    """One SMS in three shares its sender with the one before: one of each pair is stored
    (batches overlap, so either), the other dead-lettered as `duplicate_key` naming the
    index; none counted as stored without being stored."""
    topic = await new_topic(partitions=3)
    total = 3000
    collection = mongo_db["messages"]
    await collection.create_index("sender", unique=True, name=UNIQUE_SENDER)
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"))
    values = [sms_value(n) | {"sender": f"+2547{n - n % 3 // 2:08d}"} for n in range(total)]
    await produce(settings.kafka_bootstrap, topic, values)
    async with running(settings):
        await eventually(lambda: _lag_zero(kafka_admin, settings.group_id, topic, total),
                         within=90, what="lag 0")
    stored = await collection.distinct("_id")
    dead = await _dead(settings)
    print(f"\nunique index on sender: {len(stored)} stored, {len(dead)} dead-lettered "
          f"of {total}")
    assert await collection.count_documents({}) == len(stored), "nothing stored twice"
    assert set(stored).isdisjoint(dead)
    assert set(stored) | set(dead) == {v["id"] for v in values}, "nothing lost"
    pairs = [{f"sms-{n - 1}", f"sms-{n}"} for n in range(total) if n % 3 == 2]
    assert all(len(pair & set(stored)) == 1 for pair in pairs), "one of each clashing pair"
    for record in dead.values():
        assert header(record.headers, ERROR_CLASS) == "duplicate_key"
        assert UNIQUE_SENDER in (header(record.headers, ERROR_MESSAGE) or "")


async def test_most_sms_clashing_on_a_unique_index_halts_the_member(
    stack: StackEndpoints, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any,
    tmp_path: Path,
) -> None:
    """Ten senders for 600 SMS: the DLQ breaker halts instead of dead-lettering the stream;
    every SMS below the committed offsets is stored or dead-lettered."""
    topic = await new_topic(partitions=2)
    total = 600
    collection = mongo_db["messages"]
    await collection.create_index("sender", unique=True, name=UNIQUE_SENDER)
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"), dlq_halt_min=50)
    values = [_clashing(n, 10) for n in range(total)]
    await produce(settings.kafka_bootstrap, topic, values)
    process = StreamProcess(settings, tmp_path / "run.log")
    try:
        async with httpx.AsyncClient(base_url=process.metrics_url, timeout=5) as http:
            body = await eventually(lambda: _halted(http), what="halted")
        assert "dead-letter" in body["halted"]
    finally:
        assert await process.stop() == 0
    stored = set(await collection.distinct("_id"))
    dead = await _dead(settings)
    offsets = await committed(kafka_admin, settings.group_id, topic)
    records = await read_topic(settings.kafka_bootstrap, topic)
    settled = {
        orjson.loads(r.value)["id"] for r in records if r.offset < offsets.get(r.partition, 0)
    }
    print(f"\nmost SMS clash: halted after {len(dead)} dead-lettered, {len(stored)} stored, "
          f"{len(settled)} committed of {total}")
    assert len(dead) < total - 10
    assert settled <= stored | set(dead), "nothing committed is lost"
    assert all(header(r.headers, ERROR_CLASS) == "duplicate_key" for r in dead.values())


async def test_a_server_refusing_every_write_halts_without_dead_lettering_then_stores_all(
    stack: StackEndpoints, new_topic: Any, unique_name: Any, kafka_admin: Any,
    dedicated_mongo: Any, tmp_path: Path,
) -> None:
    """FerretDB answers every write with `code 1 InternalError`: nothing is dead-lettered,
    readiness is false, the member halts after STREAM_MONGO_HALT_AFTER, and once the server
    writes again the probe resumes it and every SMS is stored once."""
    topic = await new_topic(partitions=2)
    total = 300
    database = unique_name("db")
    table = await ferret_table(dedicated_mongo, tmp_path, database)
    settings = settings_for(
        stack, topic, database, unique_name("group"), mongo_halt_after_s=1.0,
        halt_probe_interval_s=0.5,
    ).replace(mongo_url=dedicated_mongo.url)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(dedicated_mongo.url)
    collection = client[database]["messages"]
    table.break_()
    process = StreamProcess(settings, tmp_path / "run.log")
    try:
        async with httpx.AsyncClient(base_url=process.metrics_url, timeout=5) as http:
            await produce(settings.kafka_bootstrap, topic, [sms_value(n) for n in range(total)])
            body = await eventually(lambda: _halted(http), what="halted")
            assert "no such table" in body["halted"]
            assert body["checks"]["mongo_reachable"] is False
            assert await read_topic(settings.kafka_bootstrap, settings.dlq_topic) == []
            table.repair()
            await eventually(lambda: _stored(collection, total + 1), what="all stored")
            await eventually(lambda: _lag_zero(kafka_admin, settings.group_id, topic, total),
                             what="lag 0")
            await eventually(lambda: _ready(http), what="ready again")
        assert await read_topic(settings.kafka_bootstrap, settings.dlq_topic) == []
        ids = await collection.distinct("_id")
        assert await collection.count_documents({}) == len(ids) == total + 1, "stored once"
    finally:
        assert await process.stop() == 0
        await client.close()


async def _halted(http: httpx.AsyncClient) -> dict[str, Any] | None:
    try:
        response = await http.get("/readyz")
    except httpx.TransportError:
        return None
    body: dict[str, Any] = response.json()
    return body if response.status_code == 503 and "halted" in body else None


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def _stored(collection: Any, n: int) -> bool:
    return bool(await collection.count_documents({}) >= n)
