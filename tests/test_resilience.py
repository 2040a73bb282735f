"""Outages and scaling: MongoDB going away, consumers joining while SMS flow."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from pipeline_support import StreamProcess, committed, produce, running, settings_for, sms_value
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient
from support import eventually

from stream.devkit.fakes import ScriptedProcessor
from stream.errors import SystemicError

pytestmark = pytest.mark.stack


async def _consumed(http: httpx.AsyncClient, topic: str) -> float:
    for family in text_string_to_metric_families((await http.get("/metrics")).text):
        for sample in family.samples:
            if sample.name == "stream_records_consumed_total" and sample.labels == {"topic": topic}:
                return sample.value
    return 0.0


async def _committed_sum(admin: Any, group: str, topic: str) -> int:
    return sum((await committed(admin, group, topic)).values())


async def test_mongo_outage_pauses_commits_and_everything_is_stored_after_it(
    stack: Any,
    new_topic: Any,
    unique_name: Any,
    kafka_admin: Any,
    dedicated_mongo: Any,
    tmp_path: Path,
) -> None:
    topic = await new_topic(partitions=2)
    settings = settings_for(stack, topic, "outage", unique_name("group")).replace(
        mongo_url=dedicated_mongo.url
    )
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(dedicated_mongo.url)
    collection = client["outage"]["messages"]
    process = StreamProcess(settings, tmp_path / "run.log")
    try:
        async with httpx.AsyncClient(base_url=process.metrics_url, timeout=5) as http:
            await produce(settings.kafka_bootstrap, topic, [sms_value(n) for n in range(300)])
            await eventually(lambda: _count(collection, 300), what="first 300 stored")
            await eventually(lambda: _sum_is(kafka_admin, settings, 300), what="commit 300")

            dedicated_mongo.stop()
            await produce(settings.kafka_bootstrap, topic, [sms_value(n) for n in range(300, 600)])
            await eventually(lambda: _ready_is(http, False), what="readiness false")
            await eventually(lambda: _is(_consumed(http, topic), 600.0), what="600 consumed")
            assert await _committed_sum(kafka_admin, settings.group_id, topic) == 300

            await dedicated_mongo.start()
            await eventually(lambda: _count(collection, 600), within=90, what="all 600 stored")
            await eventually(lambda: _sum_is(kafka_admin, settings, 600), what="commit 600")
            await eventually(lambda: _ready_is(http, True), what="ready again")
    finally:
        assert await process.stop() == 0
        await client.close()


async def test_scaling_from_one_to_three_consumers_while_sms_flow_loses_nothing(
    stack: Any, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any
) -> None:
    topic = await new_topic(partitions=6)
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"))
    collection = mongo_db["messages"]
    total, waves = 3000, 10

    async def flow() -> None:
        for wave in range(waves):
            chunk = range(wave * total // waves, (wave + 1) * total // waves)
            await produce(settings.kafka_bootstrap, topic, [sms_value(n) for n in chunk])
            await asyncio.sleep(0.2)  # pacing of the producer, not a wait for a condition

    async with running(settings):
        producing = asyncio.create_task(flow())
        await eventually(lambda: _count(collection, 200), what="first consumer working")
        async with running(settings), running(settings):
            await producing
            await eventually(lambda: _count(collection, total), within=90, what="all stored")
            await eventually(lambda: _sum_is(kafka_admin, settings, total), what="commit all")
            (response,) = await kafka_admin.describe_consumer_groups([settings.group_id])
            (group,) = response.to_object()["groups"]
            assert len(group["members"]) == 3
    assert await collection.count_documents({}) == total


async def _count(collection: Any, n: int) -> bool:
    return bool(await collection.count_documents({}) >= n)


async def _sum_is(admin: Any, settings: Any, n: int) -> bool:
    return await _committed_sum(admin, settings.group_id, settings.topic) == n


async def _ready_is(http: httpx.AsyncClient, ready: bool) -> bool:
    response = await http.get("/readyz")
    return (response.status_code == 200) == ready and response.json()["ok"] == ready


async def _is(value: Any, expected: float) -> bool:
    return bool(await value == expected)


async def test_a_rebalance_during_a_halt_leaves_nothing_unprocessed(
    stack: Any, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any
) -> None:
    """A halted member given partitions by a rebalance fetches nothing from them until the
    halt ends; then every SMS is processed and the group is committed to the log end."""
    topic = await new_topic(partitions=4)
    total = 500
    # A long batch wait keeps the halted member inside its fetch when the rebalance lands.
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"),
                            halt_probe_interval_s=0.5, batch_wait_s=0.5)
    collection = mongo_db["messages"]
    await produce(settings.kafka_bootstrap, topic, [sms_value(n) for n in range(total)])
    fault = SystemicError("HTTP 401", reason="http_401", setting="STREAM_API_TOKEN")
    halted = ScriptedProcessor(systemic=fault)
    async with running(settings, halted):
        await eventually(lambda: _is_true(halted.probes > 0), what="the first member halted")
        attempts = sum(halted.attempts.values())
        async with running(settings):
            await eventually(lambda: _group_size(kafka_admin, settings.group_id, 2),
                             what="the rebalance")
            await eventually(lambda: _count(collection, 100), what="the second member storing")
            assert sum(halted.attempts.values()) == attempts, "nothing fetched while halted"
            halted.systemic = None
            await eventually(lambda: _count(collection, total), what="all stored")
            await eventually(lambda: _sum_is(kafka_admin, settings, total), what="lag 0")
    assert len(await collection.distinct("_id")) == await collection.count_documents({}) == total


async def _is_true(value: bool) -> bool:
    return value


async def _group_size(admin: Any, group: str, members: int) -> bool:
    (response,) = await admin.describe_consumer_groups([group])
    (described,) = response.to_object()["groups"]
    return described["state"] == "Stable" and len(described["members"]) == members
