"""Kafka clients configured from settings, and the topics the processor needs.

One place builds the connection options (bootstrap, SASL, TLS) so the consumer, the
producer and the admin client can never disagree about how to reach the cluster.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream.adapters.kafka_security import security_options
from stream.adapters.kafka_security import start as start_client
from stream.config import Settings
from stream.errors import StreamError

__all__ = ["DEFAULT_PARTITIONS", "client_options", "ensure_topics", "new_consumer", "new_producer"]

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 6
"""Partitions of a main topic we create ourselves: room for six replicas of the group."""

MAX_REPLICATION = 3
"""Retry and DLQ topics hold records we promised not to lose: replicate like the cluster can."""

HEARTBEATS_PER_SESSION = 3
"""Kafka's own advice: heartbeat at a third of the session timeout or more often."""
FULL_REPLICATION_MIN_ISR = "2"
"""With 3 replicas, an acks=all write waits for 2: one broker may die without losing an
acknowledged record or stopping writes."""

_TOPIC_ALREADY_EXISTS = 36


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every Kafka client of the process."""
    return {"bootstrap_servers": settings.kafka_bootstrap, **security_options(settings)}


def new_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A group member with manual commits: offsets move only when work is settled."""
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.batch_max,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        rebalance_timeout_ms=int(settings.rebalance_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.session_timeout_s * 1000 / HEARTBEATS_PER_SESSION),
    )


def new_producer(settings: Settings) -> AIOKafkaProducer:
    """Retry/DLQ producer: a record is settled only once every in-sync replica has it."""
    return AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
    )


async def ensure_topics(settings: Settings) -> int:
    """Create the retry and DLQ topics (and the main one when `create_topic` is set);
    return the main topic's partitions.

    A missing main topic is otherwise an error (a typo'd STREAM_TOPIC must not idle on a
    new empty topic). Raises KafkaUnavailable when no bootstrap server answers within
    STREAM_KAFKA_STARTUP_TIMEOUT_MS, KafkaRefused when one refuses our credentials.

    Replicated on up to three brokers, with `min.insync.replicas=2` when on three.

    Retry and DLQ topics get as many partitions as the main topic, so every replica of the
    group has retry work to do when the main topic is spread over all of them.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    await start_client(admin, settings)
    try:
        existing = set(await admin.list_topics())
        brokers = len((await admin.describe_cluster())["brokers"])
        replication = min(MAX_REPLICATION, brokers)
        configs = ({"min.insync.replicas": FULL_REPLICATION_MIN_ISR}
                   if replication == MAX_REPLICATION else {})
        if settings.topic in existing:
            (described,) = await admin.describe_topics([settings.topic])
            partitions = len(described["partitions"])
        elif settings.create_topic:
            partitions = DEFAULT_PARTITIONS
        else:
            raise StreamError(
                f"topic {settings.topic!r} does not exist at {settings.kafka_bootstrap}; "
                "check STREAM_TOPIC, or set STREAM_CREATE_TOPIC=true to create it"
            )
        wanted = [settings.topic, *settings.retry_topics, settings.dlq_topic]
        missing = [NewTopic(t, partitions, replication, topic_configs=configs)
                   for t in wanted if t not in existing]
        if missing:
            response = await admin.create_topics(missing)
            for topic, code, *rest in response.topic_errors:
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise StreamError(f"cannot create topic {topic}: error {code} {rest}")
            log.info("created topics", extra={"topics": [t.name for t in missing]})
        return partitions
    finally:
        await admin.close()
