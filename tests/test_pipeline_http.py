"""The pipeline with the HTTP processor against the real reference upstream over loopback."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pipeline_support import committed, produce, read_topic, running, settings_for, sms_value
from support import eventually

from stream.devkit.upstream import ReferenceUpstream, UpstreamBehaviour
from stream.engine.failures import ATTEMPT, ERROR_CLASS, header
from stream.observability.httpserver import HttpServer, Request, Response, json_response
from stream.processors.http import HttpProcessor
from stream.sms.parser import parse_sms

pytestmark = pytest.mark.stack


@pytest.fixture
async def env(stack: Any, new_topic: Any, mongo_db: Any, unique_name: Any) -> dict[str, Any]:
    topic = await new_topic(partitions=2)
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"))
    return {"settings": settings, "collection": mongo_db["messages"]}


async def test_http_processor_stores_the_api_result(env: dict[str, Any], kafka_admin: Any) -> None:
    collection = env["collection"]
    values = [sms_value(n) for n in range(200)]
    async with ReferenceUpstream(UpstreamBehaviour(latency=0.02)) as upstream:
        settings = env["settings"].replace(processor="http", api_url=upstream.url)
        await produce(settings.kafka_bootstrap, settings.topic, values)
        async with running(settings):
            await eventually(lambda: _count_is(collection, 200), what="200 documents")
        assert upstream.stats()["concurrency_high_water"] > 1
    doc = await collection.find_one({"_id": "sms-0"})
    assert doc is not None
    assert doc["processor"] == "http"
    assert doc["parsed"] == parse_sms(values[0]["body"], values[0]["sender"])


async def test_upstream_errors_send_sms_to_retry_then_they_succeed(env: dict[str, Any]) -> None:
    collection = env["collection"]
    async with ReferenceUpstream(UpstreamBehaviour(error_rate=1.0)) as upstream:
        settings = env["settings"].replace(processor="http", api_url=upstream.url)
        await produce(settings.kafka_bootstrap, settings.topic, [sms_value(n) for n in range(5)])
        async with (
            HttpProcessor(settings, max_attempts=1) as processor,
            running(settings, processor),
        ):
            await eventually(
                lambda: _records_at_least(settings.kafka_bootstrap, settings.retry_topics[0], 5),
                what="5 records in retry.1",
            )
            upstream.set_behaviour(UpstreamBehaviour())
            await eventually(lambda: _count_is(collection, 5), what="5 documents")
    async for doc in collection.find({}):
        assert doc["attempts"] >= 2
    assert await read_topic(settings.kafka_bootstrap, settings.dlq_topic) == []


async def test_api_rejection_of_one_sms_goes_to_the_dlq_at_once(
    env: dict[str, Any], kafka_admin: Any
) -> None:
    """A 422 is about one SMS: that one is dead-lettered at once, the others are stored.
    (A 401 for every SMS is a configuration fault that halts: tests/test_faults.py.)"""

    async def parse(request: Request) -> Response:
        sms = request.json()
        if sms["id"] == "sms-1":
            return json_response({"error": "unprocessable"}, 422)
        return json_response(parse_sms(sms["body"], sms["sender"]))

    async with HttpServer({("POST", "/v1/parse"): parse}) as server:
        settings = env["settings"].replace(
            processor="http", api_url=f"http://127.0.0.1:{server.port}/v1/parse"
        )
        await produce(settings.kafka_bootstrap, settings.topic, [sms_value(n) for n in range(3)])
        async with running(settings):
            dead = await eventually(
                lambda: _records_at_least(settings.kafka_bootstrap, settings.dlq_topic, 1),
                what="a record in the DLQ",
            )
            await eventually(
                lambda: _committed_sum_is(kafka_admin, settings, 3), what="offsets committed"
            )
    assert {header(r.headers, ERROR_CLASS) for r in dead} == {"http_422"}
    assert {header(r.headers, ATTEMPT) for r in dead} == {"1"}
    assert [orjson.loads(r.value)["id"] for r in dead] == ["sms-1"]
    assert await env["collection"].count_documents({}) == 2


async def _count_is(collection: Any, expected: int) -> bool:
    return bool(await collection.count_documents({}) == expected)


async def _records_at_least(bootstrap: str, topic: str, count: int) -> list[Any] | None:
    records = await read_topic(bootstrap, topic)
    return records if len(records) >= count else None


async def _committed_sum_is(admin: Any, settings: Any, n: int) -> bool:
    return sum((await committed(admin, settings.group_id, settings.topic)).values()) == n
