"""Kafka clients configured from settings.

One place builds the connection options (bootstrap, SASL, TLS) so the consumer, the
producer and the admin client can never disagree about how to reach the cluster. The
topics themselves are `stream.adapters.topics`' job.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from stream.adapters.kafka_security import security_options
from stream.adapters.kafka_security import start as start_client
from stream.adapters.raw_records import GroupConsumer
from stream.config import Settings

__all__ = [
    "client_options",
    "compression_type",
    "new_consumer",
    "new_producer",
    "start_admin",
]

log = logging.getLogger(__name__)

HEARTBEATS_PER_SESSION = 3
"""Kafka's own advice: heartbeat at a third of the session timeout or more often."""
HEARTBEAT_MAX_S = 3.0
"""Members learn of a rebalance from a heartbeat's answer: a session long enough for a static
member's restart must not make every rebalance wait a third of it (Kafka's default, 3 s)."""


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every Kafka client of the process."""
    return {"bootstrap_servers": settings.kafka_bootstrap, **security_options(settings)}


def compression_type(settings: Settings) -> str | None:
    """aiokafka's spelling of STREAM_KAFKA_COMPRESSION (None: uncompressed)."""
    return None if settings.kafka_compression == "none" else settings.kafka_compression


def new_consumer(settings: Settings, client_id: str = "stream") -> GroupConsumer:
    """A group member with manual commits: offsets move only when work is settled.

    `client_id` is what the group lists for this member (`stream status` matches on it).
    Static when STREAM_KAFKA_GROUP_INSTANCE_ID is set: a restart within the session timeout
    gets its partitions back without a rebalance (and no LeaveGroup is sent on stop: a
    member gone for good holds its partitions until the session times out). Metadata is
    refreshed every STREAM_METADATA_REFRESH, so a leader sees added partitions within it.
    """
    return GroupConsumer(
        **client_options(settings),
        client_id=client_id,
        group_id=settings.group_id,
        group_instance_id=settings.kafka_group_instance_id or None,
        metadata_max_age_ms=int(settings.metadata_refresh_s * 1000),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=settings.kafka_isolation_level,
        max_poll_records=settings.batch_max,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        rebalance_timeout_ms=int(settings.rebalance_timeout_s * 1000),
        heartbeat_interval_ms=int(
            min(settings.session_timeout_s / HEARTBEATS_PER_SESSION, HEARTBEAT_MAX_S) * 1000
        ),
    )


def new_producer(settings: Settings) -> AIOKafkaProducer:
    """Retry/DLQ producer: a record is settled only once every in-sync replica has it."""
    return AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        compression_type=compression_type(settings),
    )


async def start_admin(settings: Settings) -> AIOKafkaAdminClient:
    """A started admin client; raises KafkaUnavailable when no bootstrap server answers
    within STREAM_KAFKA_STARTUP_TIMEOUT_MS, KafkaRefused when one refuses our credentials."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await start_client(admin, settings)
    return admin
