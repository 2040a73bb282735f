"""The topics and the group as operators change them, against the real broker.

- static membership: a member restarted with its instance id within the session timeout
  gets its partitions back without a rebalance and continues from its commits; when it
  was the leader (and now believes it follows), partitions added later are still
  consumed within STREAM_METADATA_REFRESH;
- partitions added to the main topic: consumed, and their failures reach retry topics and
  the DLQ, which grow to the main topic's partition count;
- a retry ladder longer than the member's own (a rollback): every level on the broker is
  consumed and drained;
- a deleted DLQ topic the broker refuses to create again: halted with a reason, SIGTERM
  exits 0, and once creation is allowed it is recreated and consumption resumes.
Each ends with the ledger: stored once, lost 0, lag 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewPartitions, NewTopic
from aiokafka.errors import KafkaError
from pipeline_support import StreamProcess, produce, read_topic, running, settings_for, sms_value
from prometheus_client.parser import text_string_to_metric_families
from support import eventually

from stream.adapters.topics import MISSING_TOPIC_REASON
from stream.config import Settings
from stream.devkit.stack import StackEndpoints
from stream.engine.failures import Failure, Origin
from stream.errors import SystemicError, TransientError
from stream.observability import metrics
from stream.sms.models import Outcome, Sms

pytestmark = pytest.mark.stack

REFRESH_S = 1.0
"""STREAM_METADATA_REFRESH in these tests: changes are seen within a second."""


def _events(log: Path, event: str) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


async def _logged(log: Path, event: str, times: int = 1) -> bool:
    return len(_events(log, event)) >= times


async def _lag(settings: Settings, topics: Sequence[str], admin: Any) -> int:
    """Records of `topics` past the group's committed offsets (uncommitted partitions from 0)."""
    offsets = await admin.list_consumer_group_offsets(settings.group_id)
    commits = {tp: meta.offset for tp, meta in offsets.items()}
    described = await admin.describe_topics(list(topics))
    tps = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
    assert len({tp.topic for tp in tps}) == len(topics), described
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return sum(end - commits.get(tp, 0) for tp, end in ends.items())


async def _lag_is_zero(settings: Settings, topics: Sequence[str], admin: Any) -> bool:
    return await _lag(settings, topics, admin) == 0


async def _count(collection: Any, n: int) -> bool:
    return bool(await collection.count_documents({}) >= n)


async def _partitions(admin: Any, topic: str) -> int:
    (described,) = await admin.describe_topics([topic])
    return len(described["partitions"])


async def _add_partitions(admin: Any, topic: str, total: int) -> None:
    """`kafka-topics --alter --partitions`, returning once every partition has a leader."""
    await admin.create_partitions({topic: NewPartitions(total)})

    async def led() -> bool:
        (described,) = await admin.describe_topics([topic])
        return len([p for p in described["partitions"] if p["leader"] >= 0]) == total

    await eventually(led, what=f"{total} partitions led")


async def _sample(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        text = (await http.get("/metrics")).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in (labels or {}).items()):
                total += sample.value
    return total


async def test_restarted_static_leader_keeps_the_group_stable_and_still_finds_added_partitions(
    stack: StackEndpoints, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any,
    tmp_path: Path,
) -> None:
    """The leader restarts with its instance id within the session timeout: the other member
    is never revoked, the leader gets its partitions back and reads on from its commits.
    It now believes it follows (aiokafka's JoinGroup predates KIP-814), so no member would
    watch for added partitions; the reconciler's announced partition counts still make the
    group take in the two partitions added afterwards."""
    topic = await new_topic(partitions=4)
    base = settings_for(stack, topic, mongo_db.name, unique_name("group"),
                        session_timeout_s=30.0, metadata_refresh_s=REFRESH_S)
    leader_settings = base.replace(kafka_group_instance_id="member-a")
    bootstrap = base.kafka_bootstrap
    collection = mongo_db["messages"]
    await produce(bootstrap, topic, [sms_value(n) for n in range(40)])
    leader = StreamProcess(leader_settings, tmp_path / "a1.log")
    follower = None
    restarted = None
    try:
        await eventually(lambda: _logged(tmp_path / "a1.log", "partitions assigned"),
                         what="the leader's assignment")
        follower = StreamProcess(base.replace(kafka_group_instance_id="member-b"),
                                 tmp_path / "b.log")
        await eventually(lambda: _logged(tmp_path / "b.log", "partitions assigned"),
                         what="the follower's assignment")
        await eventually(lambda: _count(collection, 40), what="the first SMS stored")
        await eventually(lambda: _lag_is_zero(base, [topic], kafka_admin), what="lag 0")
        (before,) = _events(tmp_path / "a1.log", "partitions assigned")[-1:]

        assert await leader.stop() == 0
        per_partition = 5
        for partition in range(4):
            await produce(bootstrap, topic, [sms_value(100 * partition + n, "restart")
                                             for n in range(per_partition)], partition)
        restarted = StreamProcess(leader_settings, tmp_path / "a2.log")
        await eventually(lambda: _count(collection, 60), what="SMS stored after the restart")
        await eventually(lambda: _lag_is_zero(base, [topic], kafka_admin), what="lag 0")
        (after,) = _events(tmp_path / "a2.log", "partitions assigned")
        assert after["partitions"] == before["partitions"], "its partitions, back"
        consumed = await _sample(restarted.metrics_url, "stream_records_consumed_total")
        main_partitions = [p for p in after["partitions"] if p.startswith(f"{topic}:")]
        assert consumed == per_partition * len(main_partitions), "from its commits"
        assert _events(tmp_path / "b.log", "partitions revoked") == []
        assert len(_events(tmp_path / "b.log", "partitions assigned")) == 1

        await _add_partitions(kafka_admin, topic, 6)
        for partition in (4, 5):
            await produce(bootstrap, topic, [sms_value(100 * partition + n, "added")
                                             for n in range(per_partition)], partition)
        added = time.monotonic()
        await eventually(lambda: _count(collection, 70), within=60,
                         what="SMS of the added partitions stored")
        print(f"\nadded partitions consumed after {time.monotonic() - added:.1f} s "
              f"(STREAM_METADATA_REFRESH {REFRESH_S:g} s)")
        await eventually(lambda: _lag_is_zero(base, [topic], kafka_admin), what="lag 0")
        for derived in (*base.retry_topics, base.dlq_topic):
            assert await _partitions(kafka_admin, derived) == 6, derived
        stored_twice = sum([await _sample(p.metrics_url, "stream_sms_already_stored_total")
                            for p in (restarted, follower)])
        assert stored_twice == 0
    finally:  # every member stopped (and its log closed) before any exit code is judged
        codes = [await p.stop() for p in (restarted, follower, leader) if p is not None]
    assert codes == [0] * len(codes)
    assert len(await collection.distinct("_id")) == 70


class FlakyProcessor:
    """Parses like the builtin processor; SMS whose id starts with `flaky` fail transiently."""

    name = "flaky"

    async def process_many(self, batch: Sequence[Sms]) -> list[Outcome]:
        return [
            TransientError("upstream busy", reason="http_503") if sms.id.startswith("flaky")
            else {"chars": len(sms.body)}
            for sms in batch
        ]

    async def probe(self) -> SystemicError | None:
        return None


async def test_added_partitions_are_consumed_and_their_failures_reach_retry_and_dlq(
    stack: StackEndpoints, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any,
) -> None:
    topic = await new_topic(partitions=2)
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"),
                            metadata_refresh_s=REFRESH_S)
    collection = mongo_db["messages"]
    async with running(settings, FlakyProcessor()):
        await eventually(lambda: _lag_is_zero(settings, [topic], kafka_admin), what="joined")
        await _add_partitions(kafka_admin, topic, 4)
        for partition in (2, 3):
            await produce(settings.kafka_bootstrap, topic,
                          [sms_value(10 * partition + n) for n in range(5)]
                          + [sms_value(10 * partition + n, "flaky") for n in range(2)],
                          partition)
        await eventually(lambda: _count(collection, 10), within=30, what="SMS stored")
        dead = await eventually(lambda: _records(settings, settings.dlq_topic, 4),
                                within=30, what="flaky SMS dead-lettered")
        await eventually(lambda: _lag_is_zero(settings, [topic, *settings.retry_topics],
                                              kafka_admin), what="lag 0")
    assert sorted(r.partition for r in await read_topic(settings.kafka_bootstrap, topic)
                  if r.partition >= 2) == [2] * 7 + [3] * 7
    for derived in (*settings.retry_topics, settings.dlq_topic):
        assert await _partitions(kafka_admin, derived) == 4, derived
    for retry_topic in settings.retry_topics:
        assert len(await read_topic(settings.kafka_bootstrap, retry_topic)) == 4
    assert await collection.count_documents({}) == 10
    assert len(dead) == 4


async def _records(settings: Settings, topic: str, n: int) -> list[Any] | None:
    records = await read_topic(settings.kafka_bootstrap, topic)
    return records if len(records) >= n else None


def _left_in_level(settings: Settings, level: int, n: int, prefix: str) -> list[tuple[
        bytes, bytes, list[tuple[str, bytes]]]]:
    """Records a member with a longer ladder left in retry level `level`: due now."""
    now = datetime.now(UTC)
    records = []
    for i in range(n):
        value = sms_value(i, prefix)
        failure = Failure(
            origin=Origin(settings.topic, 0, i, previous_attempts=level),
            attempt=level,
            error_class="http_503",
            error_message="upstream busy",
            first_failed_at=now,
            not_before=now,
        )
        records.append((value["sender"].encode(), orjson.dumps(value), failure.to_headers()))
    return records


async def test_member_with_two_retry_levels_drains_a_four_level_ladder(
    stack: StackEndpoints, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A rollback from four retry levels to two: the records in `retry.3` and `retry.4` are
    consumed; those that pass are stored once, those that fail again go to the DLQ (past
    the member's own ladder); lag 0 on all five topics; the extra levels logged once."""
    topic = await new_topic(partitions=2)
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"),
                            metadata_refresh_s=REFRESH_S)
    four_levels = [f"{topic}.retry.{n}" for n in range(1, 5)]
    await kafka_admin.create_topics(
        [NewTopic(t, 2, 1) for t in (*four_levels, settings.dlq_topic)])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for level in (3, 4):
            for prefix in ("ok", "flaky"):
                for key, value, headers in _left_in_level(settings, level, 5, f"{prefix}{level}"):
                    await producer.send_and_wait(f"{topic}.retry.{level}", value, key=key,
                                                 headers=headers)
    finally:
        await producer.stop()
    collection = mongo_db["messages"]
    caplog.set_level(logging.INFO, logger="stream")
    async with running(settings, FlakyProcessor()):
        await eventually(lambda: _count(collection, 10), within=30, what="SMS stored")
        dead = await eventually(lambda: _records(settings, settings.dlq_topic, 10),
                                within=30, what="SMS dead-lettered")
        await eventually(lambda: _lag_is_zero(settings, [topic, *four_levels], kafka_admin),
                         what="lag 0 on every level")
        await asyncio.sleep(3 * REFRESH_S)  # checks go on; the levels are logged only once
    assert await collection.count_documents({}) == 10
    assert sorted(d["_id"] for d in await collection.find({}, {"_id": 1}).to_list()) == sorted(
        f"ok{level}-{i}" for level in (3, 4) for i in range(5))
    assert len(dead) == 10, "each failing SMS dead-lettered once"
    assert {orjson.loads(r.value)["id"][:6] for r in dead} == {"flaky3", "flaky4"}
    found = [r for r in caplog.records if r.getMessage().startswith("consuming retry levels")]
    assert len(found) == 1
    assert found[0].levels == [3, 4]  # type: ignore[attr-defined]


async def _halted_readiness(http: httpx.AsyncClient) -> dict[str, Any] | None:
    try:
        response = await http.get("/readyz")
    except httpx.TransportError:
        return None
    body: dict[str, Any] = response.json()
    return body if response.status_code == 503 and "halted" in body else None


async def _block_creation(admin: Any, topic: str) -> str:
    """Delete `topic` and make the broker refuse to create it again: a topic whose name
    differs only in '.' versus '_' collides with it (Kafka refuses both, also auto-creation)."""
    blocker = topic.replace(".", "_")

    async def swapped() -> bool:
        with contextlib.suppress(KafkaError):  # deleted already; recreated meanwhile: again
            await admin.delete_topics([topic])
        return await _created(admin, blocker)

    await eventually(swapped, what="the colliding topic created")
    return blocker


async def _created(admin: Any, topic: str) -> bool:
    response = await admin.create_topics([NewTopic(topic, 1, 1)])
    ((_, code, *_),) = response.topic_errors
    return code in (0, 36)


POISON = [b"{not json", b'{"id": 1}', b"\xff"]


async def test_dlq_topic_that_cannot_be_created_halts_and_sigterm_exits_cleanly(
    stack: StackEndpoints, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any,
    tmp_path: Path,
) -> None:
    """The DLQ topic deleted, and its creation refused: the member halts (`/readyz` 503,
    `stream_halted{reason="topic_missing"}`), commits nothing past the poison, and SIGTERM
    exits 0 within the drain bound; a member started once creation is allowed creates the
    topic and settles everything."""
    topic = await new_topic(partitions=2)
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"),
                            metadata_refresh_s=REFRESH_S, halt_probe_interval_s=0.5)
    process = StreamProcess(settings, tmp_path / "run.log")
    try:
        await eventually(lambda: _logged(tmp_path / "run.log", "partitions assigned"),
                         what="joined")
        blocker = await _block_creation(kafka_admin, settings.dlq_topic)
        await produce(settings.kafka_bootstrap, topic, [sms_value(n) for n in range(20)])
        await produce(settings.kafka_bootstrap, topic, POISON)
        async with httpx.AsyncClient(base_url=process.metrics_url, timeout=5) as http:
            ready = await eventually(lambda: _halted_readiness(http), within=30,
                                     what="halted")
        assert settings.dlq_topic in ready["halted"]
        halted = await _sample(process.metrics_url, "stream_halted",
                               {"reason": MISSING_TOPIC_REASON})
        assert halted == 1
        assert await _lag(settings, [topic], kafka_admin) > 0, "nothing past the poison"
    finally:
        started = time.monotonic()
        assert await process.stop() == 0
        stopped_in = time.monotonic() - started
    print(f"\nhalted on a missing DLQ topic: SIGTERM exited 0 in {stopped_in:.1f} s")
    assert stopped_in < settings.drain_timeout_s + 5
    assert [line["level"] for line in _events(tmp_path / "run.log", "stopped: drained and "
                                              "committed")] == ["INFO"]

    await kafka_admin.delete_topics([blocker])
    collection = mongo_db["messages"]
    async with running(settings):
        await eventually(lambda: _count(collection, 20), what="SMS stored")
        dead = await eventually(lambda: _records(settings, settings.dlq_topic, 3),
                                what="poison dead-lettered")
        await eventually(lambda: _lag_is_zero(settings, [topic], kafka_admin), what="lag 0")
        await eventually(lambda: _has_partitions(kafka_admin, settings.dlq_topic, 2),
                         what="the DLQ topic with the main topic's partitions")
    assert sorted(r.value for r in dead) == sorted(POISON)
    assert await collection.count_documents({}) == 20


async def test_deleted_dlq_topic_is_recreated_while_running_and_a_refusal_halts_until_lifted(
    stack: StackEndpoints, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any,
) -> None:
    """While running: a deleted DLQ topic is recreated with the main topic's partitions;
    deleted again and refused, publishing to it halts; creation allowed again, the probe
    recreates it and consumption resumes with nothing lost (each poison record in the DLQ
    at least once)."""
    topic = await new_topic(partitions=3)
    settings = settings_for(stack, topic, mongo_db.name, unique_name("group"),
                            metadata_refresh_s=REFRESH_S, halt_probe_interval_s=0.5)
    collection = mongo_db["messages"]
    halted = metrics.HALTED.labels(MISSING_TOPIC_REASON)
    async with running(settings):
        await eventually(lambda: _lag_is_zero(settings, [topic], kafka_admin), what="joined")
        await kafka_admin.delete_topics([settings.dlq_topic])
        await eventually(lambda: _has_partitions(kafka_admin, settings.dlq_topic, 3),
                         within=30, what="the DLQ topic recreated")
        await produce(settings.kafka_bootstrap, topic, [POISON[0]])
        await eventually(lambda: _records(settings, settings.dlq_topic, 1), what="dead-lettered")

        blocker = await _block_creation(kafka_admin, settings.dlq_topic)
        await produce(settings.kafka_bootstrap, topic, [sms_value(n) for n in range(10)])
        await produce(settings.kafka_bootstrap, topic, POISON[1:])
        await eventually(lambda: _gauge_is(halted, 1), within=30, what="halted")
        await kafka_admin.delete_topics([blocker])
        await eventually(lambda: _gauge_is(halted, 0), within=30, what="resumed")
        await eventually(lambda: _count(collection, 10), what="SMS stored")
        dead = await eventually(lambda: _records(settings, settings.dlq_topic, 2),
                                what="poison dead-lettered")
        await eventually(lambda: _lag_is_zero(settings, [topic], kafka_admin), what="lag 0")
    # Copies queued before the halt are delivered when the topic is back within the
    # producer's delivery timeout, next to those of the records read again: at least once.
    assert {r.value for r in dead} == set(POISON[1:])
    assert len(dead) <= 2 * len(POISON[1:])
    print(f"\nDLQ after the halt: {len(dead)} copies of {len(POISON[1:])} poison records")
    assert await collection.count_documents({}) == 10


async def _has_partitions(admin: Any, topic: str, n: int) -> bool:
    try:
        return await _partitions(admin, topic) == n
    except Exception:  # noqa: BLE001 - absent for a moment
        return False


async def _gauge_is(gauge: Any, value: float) -> bool:
    return bool(gauge._value.get() == value)
