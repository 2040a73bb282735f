"""Shared fixtures: the real local stack (Kafka + Mongo) and per-test unique resources.

`stack` reuses a stack already running in `<repo>/.stack` (`make stack-up`), or starts one
for the session and stops it at the end. STREAM_KAFKA_BOOTSTRAP / STREAM_MONGO_URL point
the whole run at other servers (e.g. a real MongoDB). Tests using a stack fixture, directly
or through another fixture, get the `stack` marker: `pytest -m "not stack"` skips them.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from stream.devkit.stack import (
    MONGO_ENV,
    MongoServer,
    StackEndpoints,
    default_cache_dir,
    down,
    ensure_up,
    unavailable_reason,
    wait_ready,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Fixtures that need a running server; a test using any of them is marked `stack`.
_STACK_FIXTURES = frozenset({"stack", "dedicated_mongo"})
# Brokers of the `cluster` fixture: the smallest KRaft quorum that survives losing one.
CLUSTER_BROKERS = 3
# A new topic's leaders are elected in milliseconds on one node; this bounds a sick broker.
TOPIC_READY_S = 30.0

UniqueName = Callable[..., str]
NewTopicFactory = Callable[..., Awaitable[str]]
MongoDoc = dict[str, Any]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: starts a 3-broker Kafka cluster of its own (three JVMs, ~30 s)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def stack_dir() -> Path:
    return REPO_ROOT / ".stack"


@pytest.fixture(scope="session")
async def stack(stack_dir: Path) -> AsyncIterator[StackEndpoints]:
    """Kafka bootstrap and Mongo URL of the running stack (started here if need be)."""
    endpoints = await ensure_up(stack_dir)
    yield endpoints
    if endpoints.started:
        await asyncio.to_thread(down, stack_dir)


class Cluster:
    """A 3-broker Kafka stack of a test module's own (brokers may be killed), with the
    session's Mongo server: `dir` is its stack dir, `endpoints` what it answers at."""

    def __init__(self, stack_dir: Path, mongo_url: str) -> None:
        self.dir = stack_dir
        self.env = {MONGO_ENV: mongo_url}

    async def up(self) -> StackEndpoints:
        """Start the cluster, or restart the brokers killed since (on their ports)."""
        self.endpoints = await ensure_up(self.dir, brokers=CLUSTER_BROKERS, env=self.env)
        return self.endpoints


@pytest.fixture(scope="module")
async def cluster(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory,
                  ) -> AsyncIterator[Cluster]:
    """Three JVMs on a small machine: one cluster per module, stopped after it."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster") / "stack", stack.mongo_url)
    try:
        await cluster.up()
        yield cluster
    finally:
        await asyncio.to_thread(down, cluster.dir)


@pytest.fixture
def unique_name() -> UniqueName:
    """`unique_name("topic")` -> `topic_1f3a9c0b2e`: short, unique, valid as a topic,
    group or database name, so tests never see each other's data on a shared stack."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}_{secrets.token_hex(5)}"

    return make


@pytest.fixture(scope="session")
async def kafka_admin(stack: StackEndpoints) -> AsyncIterator[Any]:
    """A started `AIOKafkaAdminClient` for the session."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    yield admin
    await admin.close()


@pytest.fixture
async def new_topic(kafka_admin: Any, unique_name: UniqueName) -> AsyncIterator[NewTopicFactory]:
    """`await new_topic(partitions=3, configs=None, name=None) -> str`: a topic whose
    partitions all have a leader. After the test it is deleted, with the topics named
    after it (`<topic>.retry.1`, `<topic>.dlq`, ...), so a long-lived stack stays small."""
    created: list[str] = []

    async def make(partitions: int = 3, *, configs: dict[str, str] | None = None,
                   name: str | None = None) -> str:
        topic = name or unique_name("topic")
        response = await kafka_admin.create_topics(
            [NewTopic(topic, partitions, 1, topic_configs=configs or {})]
        )
        errors = [(code, message) for _, code, message in response.topic_errors if code]
        assert not errors, f"creating {topic}: {errors}"
        created.append(topic)
        await wait_ready(f"leaders of topic {topic}",
                         lambda: _has_leaders(kafka_admin, topic, partitions),
                         timeout_s=TOPIC_READY_S)
        return topic

    yield make
    if created:
        existing = await kafka_admin.list_topics()
        owned = [t for t in existing if any(t == c or t.startswith(f"{c}.") for c in created)]
        await kafka_admin.delete_topics(owned)


async def _has_leaders(admin: Any, topic: str, partitions: int) -> bool:
    (described,) = await admin.describe_topics([topic])
    ready = [p for p in described["partitions"] if p["error_code"] == 0 and p["leader"] >= 0]
    return described["error_code"] == 0 and len(ready) == partitions


@pytest.fixture(scope="session")
async def mongo_client(stack: StackEndpoints) -> AsyncIterator[AsyncMongoClient[MongoDoc]]:
    client: AsyncMongoClient[MongoDoc] = AsyncMongoClient(stack.mongo_url)
    yield client
    await client.close()


@pytest.fixture
async def mongo_db(
    mongo_client: AsyncMongoClient[MongoDoc], unique_name: UniqueName
) -> AsyncIterator[AsyncDatabase[MongoDoc]]:
    """A database of this test's own, dropped after it."""
    name = unique_name("db")
    yield mongo_client[name]
    await mongo_client.drop_database(name)


@pytest.fixture
async def dedicated_mongo(tmp_path: Path) -> AsyncIterator[MongoServer]:
    """A running Mongo server of this test's own: `stop()` kills it, `await start()` brings
    it back on the same port and data. Skips when no local server binary can be had."""
    cache_dir = default_cache_dir()
    reason = await asyncio.to_thread(unavailable_reason, cache_dir)
    if reason is not None:
        pytest.skip(f"no dedicated Mongo server: {reason}")
    async with MongoServer(tmp_path / "mongo", cache_dir) as server:
        yield server
