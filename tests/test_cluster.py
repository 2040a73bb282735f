"""Failover on a 3-broker cluster: `kill -9` of a broker while SMS flow loses nothing.

The processor runs in this process against a cluster of the module's own (see the
`cluster` fixture); a producer keeps sending SMS, with a poison record now and then, while
one broker is killed: the leader of a busy partition, or the group coordinator's broker.
Afterwards every acknowledged SMS is stored once, every poison record is in the DLQ, and
the group has committed to the end of the topic. The killed broker is restarted (on its
ports) before the next test.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from conftest import CLUSTER_BROKERS, Cluster
from pipeline_support import committed, read_topic, running, settings_for, sms_value
from prometheus_client import REGISTRY
from support import eventually

from stream.devkit.stack import kafka_service, kill

pytestmark = [pytest.mark.stack, pytest.mark.cluster]

log = logging.getLogger(__name__)

# SMS sent per second: busy enough that every partition has records in flight at the kill,
# light enough for three JVMs and the processor on two cores.
SEND_RATE = 200
# Every n-th record is poison (invalid JSON), which must end in the DLQ across the failover.
POISON_EVERY = 40
# Records stored before the kill, so the group is assigned and committing.
STORED_BEFORE_KILL = 200
# Sending goes on this long after the kill: the failover happens under traffic.
SEND_AFTER_KILL_S = 5.0
# A new leader is elected within a broker session timeout (6 s) plus an election.
ELECTION_DEADLINE_S = 30.0
# Settling after the failover: retries of the producer and the processor, one rebalance.
SETTLE_DEADLINE_S = 60.0


@dataclass
class Traffic:
    """What the test producer sent and which sends were acknowledged."""

    valid_sent: set[str] = field(default_factory=set)
    valid_acked: set[str] = field(default_factory=set)
    poison_sent: set[bytes] = field(default_factory=set)
    poison_acked: list[bytes] = field(default_factory=list)
    failed: int = 0
    ends: dict[int, int] = field(default_factory=dict)  # partition -> last acked offset + 1


async def _send(bootstrap: str, topic: str, prefix: str, stop: asyncio.Event,
                traffic: Traffic) -> None:
    """Send SMS at SEND_RATE until `stop`; a send that fails for good is not expected."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5)
    await producer.start()
    pending: list[tuple[asyncio.Future[Any], str | None, bytes]] = []
    try:
        n = 0
        while not stop.is_set():
            n += 1
            if n % POISON_EVERY == 0:
                sms_id, value, key = None, f"{{not json {prefix}-{n}".encode(), None
                traffic.poison_sent.add(value)
            else:
                sms = sms_value(n, prefix)
                sms_id, value, key = sms["id"], orjson.dumps(sms), sms["sender"].encode()
                traffic.valid_sent.add(sms_id)
            pending.append((await producer.send(topic, value, key=key), sms_id, value))
            await asyncio.sleep(1 / SEND_RATE)
    finally:
        for future, sms_id, value in pending:
            try:
                sent = await future
            except KafkaError:
                traffic.failed += 1
                continue
            traffic.ends[sent.partition] = max(traffic.ends.get(sent.partition, 0),
                                               sent.offset + 1)
            if sms_id is None:
                traffic.poison_acked.append(value)
            else:
                traffic.valid_acked.add(sms_id)
        await producer.stop()


async def _leaders(admin: Any, topic: str) -> dict[int, int]:
    (described,) = await admin.describe_topics([topic])
    return {p["partition"]: p["leader"] for p in described["partitions"]}


async def _lag(admin: Any, group: str, topic: str, ends: dict[int, int]) -> int:
    """Records acknowledged to the test producer that the group has not committed past.

    Ends come from the producer's acknowledgements: a ListOffsets to a leader elected
    moments ago can answer OFFSET_NOT_AVAILABLE for longer than the settle deadline.
    """
    done = await committed(admin, group, topic)
    return sum(max(0, end - done.get(partition, 0)) for partition, end in ends.items())


def _already_stored() -> float:
    return REGISTRY.get_sample_value("stream_sms_already_stored_total") or 0.0


@pytest.mark.parametrize("victim", ["partition_leader", "group_coordinator"])
async def test_killing_a_broker_under_traffic_loses_and_duplicates_nothing(
    cluster: Cluster, mongo_db: Any, unique_name: Any,
    victim: Literal["partition_leader", "group_coordinator"],
) -> None:
    endpoints = await cluster.up()  # restarts the broker an earlier test killed
    bootstrap = endpoints.kafka_bootstrap
    topic, group = unique_name("topic"), unique_name("group")
    settings = settings_for(endpoints, topic, mongo_db.name, group, create_topic=True)
    collection = mongo_db["messages"]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    traffic, stop_sending = Traffic(), asyncio.Event()
    redelivered_before = _already_stored()
    try:
        async with running(settings):
            sender = asyncio.create_task(_send(bootstrap, topic, topic, stop_sending, traffic))
            await eventually(
                lambda: _at_least(collection, STORED_BEFORE_KILL), within=SETTLE_DEADLINE_S,
                what=f"{STORED_BEFORE_KILL} SMS stored before the kill",
            )
            leaders = await _leaders(admin, topic)
            coordinator = await admin.find_coordinator(group)
            if victim == "group_coordinator":
                node = coordinator
                moved = functools.partial(_coordinator_elsewhere, admin, group, node)
            else:  # a partition whose leader is not also the coordinator, if there is one
                watched = next((p for p, n in sorted(leaders.items()) if n != coordinator),
                               min(leaders))
                node = leaders[watched]
                moved = functools.partial(_led_elsewhere, admin, topic, watched, node)
            killed_at = time.monotonic()
            await asyncio.to_thread(kill, cluster.dir, kafka_service(node, CLUSTER_BROKERS))
            new_leader = await eventually(moved, within=ELECTION_DEADLINE_S,
                                          what=f"a new {victim} after killing node {node}")
            election_s = time.monotonic() - killed_at
            await asyncio.sleep(SEND_AFTER_KILL_S)  # traffic goes on during the failover
            stop_sending.set()
            await sender
            await eventually(
                lambda: _stored_all(collection, traffic.valid_acked),
                within=SETTLE_DEADLINE_S, what="every acknowledged SMS stored",
            )
            await eventually(  # the group committed to the end of the topic
                lambda: _lag_is_zero(admin, group, topic, traffic.ends),
                within=SETTLE_DEADLINE_S, what="committed lag 0",
            )
        stored = Counter([doc["_id"] async for doc in collection.find({}, {"_id": 1})])
        dead = Counter(record.value for record in await read_topic(bootstrap,
                                                                   settings.dlq_topic))
    finally:
        stop_sending.set()
        await admin.close()

    lost = traffic.valid_acked - stored.keys()
    unknown = stored.keys() - traffic.valid_sent
    poison_missing = [value for value in traffic.poison_acked if value not in dead]
    log.warning(
        "failover (%s, node %d -> %d in %.1f s): %d SMS acked, %d failed sends, lost %d, "
        "stored twice %d, redelivered %d, poison %d (DLQ copies %d), committed lag 0",
        victim, node, new_leader, election_s, len(traffic.valid_acked), traffic.failed,
        len(lost), sum(n - 1 for n in stored.values()), _already_stored() - redelivered_before,
        len(traffic.poison_acked), sum(dead.values()),
    )
    assert traffic.valid_acked, "nothing was acknowledged"
    assert not lost, f"{len(lost)} acknowledged SMS not stored"
    assert not unknown, f"stored ids nobody sent: {sorted(unknown)[:5]}"
    assert all(n == 1 for n in stored.values())
    assert traffic.poison_acked, "no poison record was acknowledged"
    assert not poison_missing, f"{len(poison_missing)} poison records not in the DLQ"
    assert set(dead) <= traffic.poison_sent


async def _at_least(collection: Any, count: int) -> bool:
    return bool(await collection.count_documents({}) >= count)


async def _led_elsewhere(admin: Any, topic: str, partition: int, old: int) -> int | None:
    try:
        leader = (await _leaders(admin, topic)).get(partition, -1)
    except KafkaError:
        return None
    return leader if leader not in (-1, old) else None


async def _stored_all(collection: Any, ids: set[str]) -> bool:
    stored = {doc["_id"] async for doc in collection.find({}, {"_id": 1})}
    return ids <= stored


async def _lag_is_zero(admin: Any, group: str, topic: str, ends: dict[int, int]) -> bool:
    try:
        return await _lag(admin, group, topic, ends) == 0
    except KafkaError:  # the coordinator moving
        return False


async def _coordinator_elsewhere(admin: Any, group: str, old: int) -> int | None:
    try:
        node: int = await admin.find_coordinator(group)
    except KafkaError:
        return None
    return node if node != old else None
