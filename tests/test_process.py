"""`stream run` as a real process: kill -9, SIGTERM drain, metrics, health, logs."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pipeline_support import StreamProcess, committed, produce, settings_for, sms_value
from prometheus_client.parser import text_string_to_metric_families
from support import eventually

pytestmark = pytest.mark.stack


@pytest.fixture
async def env(stack: Any, new_topic: Any, mongo_db: Any, unique_name: Any) -> dict[str, Any]:
    topic = await new_topic(partitions=3)
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"))
    return {"settings": settings, "collection": mongo_db["messages"]}


async def _count_at_least(collection: Any, n: int) -> int:
    count: int = await collection.count_documents({})
    return count if count >= n else 0


async def _committed_sum(admin: Any, settings: Any) -> int:
    return sum((await committed(admin, settings.group_id, settings.topic)).values())


async def test_kill_9_mid_stream_loses_nothing_and_stores_each_sms_once(
    env: dict[str, Any], kafka_admin: Any, tmp_path: Path
) -> None:
    settings, collection = env["settings"], env["collection"]
    total = 20000
    await produce(settings.kafka_bootstrap, settings.topic, [sms_value(n) for n in range(total)])
    first = StreamProcess(settings, tmp_path / "first.log")
    await eventually(lambda: _count_at_least(collection, 1000), what="some SMS stored")
    first.signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    stored_at_kill = await collection.count_documents({})
    committed_at_kill = await _committed_sum(kafka_admin, settings)
    assert committed_at_kill <= stored_at_kill < total

    second = StreamProcess(settings, tmp_path / "second.log")
    try:
        await eventually(lambda: _count_at_least(collection, total), what="every SMS stored")
        await eventually(
            lambda: _committed_at_least(kafka_admin, settings, total), what="commit to the end"
        )
    finally:
        await second.stop()
    assert await collection.count_documents({}) == total
    print(f"\nkill -9: {stored_at_kill - committed_at_kill} SMS redelivered (stored, uncommitted)")


async def test_sigterm_drains_commits_and_exits_cleanly(
    env: dict[str, Any], kafka_admin: Any, tmp_path: Path
) -> None:
    settings, collection = env["settings"], env["collection"]
    await produce(settings.kafka_bootstrap, settings.topic, [sms_value(n) for n in range(4000)])
    process = StreamProcess(settings, tmp_path / "run.log")
    await eventually(lambda: _count_at_least(collection, 500), what="some SMS stored")
    process.signal(signal.SIGTERM)
    assert await process.wait(within=settings.drain_timeout_s + 30) == 0
    # Everything settled was committed before leaving the group: nothing to redeliver.
    assert await _committed_sum(kafka_admin, settings) == await collection.count_documents({})
    events = [
        orjson.loads(line)["event"] for line in (tmp_path / "run.log").read_text().splitlines()
    ]
    assert "stopped: drained and committed" in events


async def test_metrics_health_and_logs_follow_the_work(
    env: dict[str, Any], kafka_admin: Any, tmp_path: Path
) -> None:
    settings, collection = env["settings"], env["collection"]
    values = [sms_value(n, prefix="m") for n in range(200)]
    await produce(settings.kafka_bootstrap, settings.topic, [*values, *values[:10], b"{broken"])
    process = StreamProcess(settings, tmp_path / "run.log")
    try:
        async with httpx.AsyncClient(base_url=process.metrics_url, timeout=5) as http:
            await eventually(lambda: _status(http, "/readyz", 200), what="ready")
            assert (await http.get("/healthz")).json()["ok"] is True
            await eventually(lambda: _count_at_least(collection, 200), what="200 stored")
            await eventually(
                lambda: _committed_at_least(kafka_admin, settings, 211), what="commit all"
            )
            samples = await eventually(lambda: _scrape_when_settled(http), what="metrics settle")
    finally:
        assert await process.stop() == 0
    assert samples[("stream_sms_stored_total", ())] == await collection.count_documents({})
    assert samples[("stream_sms_already_stored_total", ())] == 10
    assert samples[("stream_records_consumed_total", (("topic", settings.topic),))] == 211
    assert samples[("stream_sms_dead_lettered_total", (("reason", "invalid_json"),))] == 1
    assert samples[("stream_commits_total", ())] >= 1
    assert samples[("stream_batch_size_count", ())] >= 1
    assert samples[("stream_mongo_write_seconds_count", ())] >= 1
    assert samples[("stream_last_commit_timestamp_seconds", ())] > 0
    log = (tmp_path / "run.log").read_text()
    lines = [orjson.loads(line) for line in log.splitlines()]
    assert all({"ts", "level", "event"} <= line.keys() for line in lines)
    for sms in values:
        assert sms["body"] not in log
        assert sms["sender"] not in log


async def _status(http: httpx.AsyncClient, path: str, expected: int) -> bool:
    try:
        return (await http.get(path)).status_code == expected
    except httpx.TransportError:
        return False


async def _scrape_when_settled(http: httpx.AsyncClient) -> dict[tuple[str, tuple[Any, ...]], float]:
    text = (await http.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return samples if samples.get(("stream_in_flight_sms", ())) == 0 else {}


async def _committed_at_least(admin: Any, settings: Any, n: int) -> bool:
    return await _committed_sum(admin, settings) >= n
