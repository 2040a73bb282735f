"""Kafka clients configured from settings, and the topics the processor needs.

One place builds the connection options (bootstrap, SASL, TLS) so the consumer, the
producer and the admin client can never disagree about how to reach the cluster.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context

from stream.adapters.raw_records import GroupConsumer
from stream.config import Settings
from stream.errors import KafkaUnavailable, StreamError

__all__ = [
    "DEFAULT_PARTITIONS",
    "client_options",
    "compression_type",
    "ensure_topics",
    "new_consumer",
    "new_producer",
]

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
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password,
        }
    if settings.kafka_security_protocol.endswith("SSL"):
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile or None)
    return options


def compression_type(settings: Settings) -> str | None:
    """aiokafka's spelling of STREAM_KAFKA_COMPRESSION (None: uncompressed)."""
    return None if settings.kafka_compression == "none" else settings.kafka_compression


def new_consumer(settings: Settings) -> GroupConsumer:
    """A group member with manual commits: offsets move only when work is settled."""
    return GroupConsumer(
        **client_options(settings),
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=settings.kafka_isolation_level,
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
        compression_type=compression_type(settings),
    )


class _ConnectFailures(logging.Filter):
    """Takes aiokafka's per-server connect errors, which it logs before raising without them.

    They are reported once instead: in KafkaUnavailable, or as one warning when another
    bootstrap server answered.
    """

    def __init__(self) -> None:
        super().__init__()
        self.causes: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        cause = record.args[-1] if isinstance(record.args, tuple) and record.args else None
        if record.levelno < logging.ERROR or not isinstance(cause, BaseException):
            return True
        self.causes.append(str(cause) or type(cause).__name__)
        return False


async def _start_or_unavailable(admin: AIOKafkaAdminClient, bootstrap: str) -> None:
    """Start `admin`; raise KafkaUnavailable with each server's failure if none answers."""
    failures = _ConnectFailures()
    client_log = logging.getLogger("aiokafka")
    client_log.addFilter(failures)
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        cause = "; ".join(dict.fromkeys(failures.causes)) or str(exc)
        raise KafkaUnavailable(bootstrap, cause) from exc
    finally:
        client_log.removeFilter(failures)
    if failures.causes:
        log.warning("some bootstrap servers failed", extra={"causes": failures.causes})


async def ensure_topics(settings: Settings) -> int:
    """Create the retry and DLQ topics (and the main one when `create_topic` is set);
    return the main topic's partitions.

    A missing main topic is otherwise an error (a typo'd STREAM_TOPIC must not idle on a
    new empty topic). Raises KafkaUnavailable when no bootstrap server answers.

    Replicated on up to three brokers, with `min.insync.replicas=2` when on three.

    Retry and DLQ topics get as many partitions as the main topic, so every replica of the
    group has retry work to do when the main topic is spread over all of them.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    await _start_or_unavailable(admin, settings.kafka_bootstrap)
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
