"""Outages and scaling: MongoDB going away, consumers joining while SMS flow."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from pipeline_support import (
    StreamProcess,
    committed,
    eventually,
    produce,
    running,
    settings_for,
    sms_value,
)
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

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
