"""Members report their state through a compacted Kafka topic, `<topic>.status`.

Each `stream run` publishes one small JSON record every `STREAM_STATUS_INTERVAL`, keyed by
its member key (the static group instance id, or an id made once per process), and a
tombstone when it leaves; compaction keeps the latest record per member, so a reader gets
the whole group's state by reading one small partition to its end. A member that crashed
leaves its last record behind: readers judge it stale from its age (`STALE_INTERVALS`).

The reporter is off the hot path: a task sampling the metrics registry and the loop's
public state, with a producer of its own whose failures are logged and retried, never
raised, so an unavailable status topic cannot stop processing.

The name ends in `.status`, which matches neither `<topic>.retry.<n>` nor `<topic>.dlq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client.metrics import MetricWrapperBase

from stream.adapters.kafka import client_options
from stream.adapters.topics import ensure_status_topic, status_topic
from stream.config import Settings
from stream.errors import StreamError
from stream.observability import metrics

__all__ = [
    "STALE_INTERVALS",
    "MemberView",
    "StatusFollower",
    "StatusReporter",
    "apply_status",
    "member_key",
    "read_statuses",
]

log = logging.getLogger(__name__)

STATUS_SCHEMA = 1
STALE_INTERVALS = 3
"""A member whose last record is older than three of its intervals is shown as stale."""
PUBLISH_TIMEOUT_S = 5.0
"""A status record not acknowledged by then is dropped; the next interval sends a new one."""
CLOSE_TIMEOUT_S = 0.5
"""Each of the tombstone and the producer's close: milliseconds when Kafka answers."""
FAILURE_LOG_EVERY_S = 60.0
READ_WAIT_MS = 200
READ_STALL_S = 10.0


def member_key(settings: Settings) -> str:
    """The static group instance id, else `<host>-<pid>-<random>`: unique per process."""
    if settings.kafka_group_instance_id:
        return settings.kafka_group_instance_id
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class MemberView:
    """Read-only views of the running member that the reporter samples."""

    assignment: Callable[[], Iterable[TopicPartition]]
    paused: Callable[[], Iterable[TopicPartition]]
    in_flight: Callable[[], int]
    halt: Callable[[], dict[str, object] | None]
    """reason, message, setting and since (unix time) while halted, else None."""


def _samples(metric: MetricWrapperBase) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every series of `metric`, through the registry's public API."""
    return [
        (sample.labels, sample.value)
        for family in metric.collect()
        for sample in family.samples
        if not sample.name.endswith(("_created", "_bucket", "_count", "_sum"))
    ]


def _total(metric: MetricWrapperBase) -> float:
    return sum(value for _, value in _samples(metric))


def _by_label(metric: MetricWrapperBase, label: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for labels, value in _samples(metric):
        if value:
            found[labels[label]] = found.get(labels[label], 0.0) + value
    return found


def _partitions(tps: Iterable[TopicPartition]) -> list[list[object]]:
    return [[tp.topic, tp.partition] for tp in sorted(tps)]


class StatusReporter:
    """Publishes this member's state every interval until closed, then a tombstone."""

    def __init__(self, settings: Settings, key: str, view: MemberView) -> None:
        self._settings = settings
        self._key = key
        self._view = view
        self._topic = status_topic(settings.topic)
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._started_at = time.time()
        self._host = socket.gethostname()
        self._version = version("stream")
        self._last: tuple[float, float, float] | None = None
        self._failure_logged = -FAILURE_LOG_EVERY_S
        self.cpu_s = 0.0
        """CPU time spent sampling and encoding (the send is awaited, so other tasks' time
        would be counted with it: its cost is measured apart, see the operations notes)."""
        self.bytes_sent = 0
        self.reports_sent = 0
        self._last_ok = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="status-reporter")

    def sample(self) -> dict[str, object]:
        """This member's state now; rates are over the time since the previous sample."""
        now = time.time()
        consumed = _total(metrics.RECORDS_CONSUMED)
        stored = _total(metrics.STORED) + _total(metrics.ALREADY_STORED)
        in_rate = stored_rate = 0.0
        if self._last is not None and now > self._last[0]:
            elapsed = now - self._last[0]
            in_rate = (consumed - self._last[1]) / elapsed
            stored_rate = (stored - self._last[2]) / elapsed
        self._last = (now, consumed, stored)
        sources = _by_label(metrics.LIMITER_RATE_SOURCE, "source")
        return {
            "schema": STATUS_SCHEMA,
            "member": self._key,
            "group": self._settings.group_id,
            "topic": self._settings.topic,
            "host": self._host,
            "pid": os.getpid(),
            "version": self._version,
            "started_at": round(self._started_at, 3),
            "at": round(now, 3),
            "interval_s": self._settings.status_interval_s,
            "partitions": _partitions(self._view.assignment()),
            "paused": _partitions(self._view.paused()),
            "in_per_s": round(in_rate, 2),
            "stored_per_s": round(stored_rate, 2),
            "in_flight": self._view.in_flight(),
            "halt": self._view.halt(),
            "limiter": {
                "estimated_rate": _total(metrics.LIMITER_ESTIMATED_RATE),
                "paced_rate": _total(metrics.LIMITER_PACED_RATE),
                "accepted_rate": _total(metrics.LIMITER_RATE),
                "limit": _total(metrics.LIMITER_LIMIT),
                "in_flight": _total(metrics.LIMITER_IN_FLIGHT),
                "source": next(iter(sources), "none"),
            },
            "totals": {
                "consumed": consumed,
                "stored": stored,
                "retried": _total(metrics.RETRIED),
                "dead_lettered": _total(metrics.DEAD_LETTERED),
            },
            "dlq_by_reason": _by_label(metrics.DEAD_LETTERED, "reason"),
            "cpu_s": round(time.process_time(), 3),
            "reporter_cpu_s": round(self.cpu_s, 4),
        }

    async def _run(self) -> None:
        while True:
            await self._publish_once()
            await asyncio.sleep(self._settings.status_interval_s)

    async def _publish_once(self) -> None:
        try:
            cpu = time.process_time()
            value = orjson.dumps(self.sample())
            self.cpu_s += time.process_time() - cpu
            await asyncio.wait_for(self._send(value), PUBLISH_TIMEOUT_S)
            self.bytes_sent += len(value) + len(self._key)
            self.reports_sent += 1
            self._last_ok = True
        except (KafkaError, StreamError, OSError, TimeoutError) as exc:
            self._last_ok = False
            now = time.monotonic()
            if now - self._failure_logged >= FAILURE_LOG_EVERY_S:
                self._failure_logged = now
                log.warning(
                    "cannot publish status; processing goes on",
                    extra={"topic": self._topic, "error": f"{type(exc).__name__}: {exc}"},
                )

    async def _send(self, value: bytes | None) -> None:
        if self._producer is None:
            await ensure_status_topic(self._settings)
            producer = AIOKafkaProducer(**client_options(self._settings), acks=1, linger_ms=0)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        sent = await self._producer.send(self._topic, value, key=self._key.encode())
        await sent

    async def aclose(self) -> None:
        """Stop reporting, publish the tombstone that says this member left, close.

        Bounded by `CLOSE_TIMEOUT_S`: a reachable broker takes milliseconds, and a stop
        must not wait for an unreachable one (readers then see this member go stale)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                if self._last_ok:
                    await self._send(None)
        except (KafkaError, StreamError, OSError, TimeoutError) as exc:
            log.warning("cannot publish the status tombstone", extra={"error": repr(exc)})
        if self._producer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._producer.stop(), CLOSE_TIMEOUT_S)


class StatusFollower:
    """Keeps the latest status record of every member that has not left, by member key.

    Reads `<topic>.status` without a consumer group; each `refresh` reads on up to the end
    offset it sees, so a long-lived reader (the console) reads each record once.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = status_topic(settings.topic)
        self._consumer: AIOKafkaConsumer | None = None
        self.members: dict[str, dict[str, Any]] = {}

    async def _assigned(self) -> AIOKafkaConsumer | None:
        if self._consumer is not None:
            return self._consumer
        # Listing first: asking for a missing topic by name may create it, uncompacted.
        admin = AIOKafkaAdminClient(**client_options(self._settings))
        try:  # a start cancelled or failed mid-bootstrap may hold a connection: close it too
            await admin.start()
            if self._topic not in await admin.list_topics():
                return None
            (described,) = await admin.describe_topics([self._topic])
        finally:
            await admin.close()
        consumer = AIOKafkaConsumer(
            **client_options(self._settings), group_id=None, enable_auto_commit=False
        )
        try:
            await consumer.start()
            tps = [TopicPartition(self._topic, p["partition"]) for p in described["partitions"]]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
        except BaseException:  # the next refresh builds a new one: this one must not leak
            await consumer.stop()
            raise
        self._consumer = consumer
        return consumer

    async def refresh(self) -> dict[str, dict[str, Any]]:
        """Read up to the current end; an empty dict while the topic does not exist."""
        consumer = await self._assigned()
        if consumer is None:
            return self.members
        tps = sorted(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        progress = time.monotonic()
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            fetched = await consumer.getmany(timeout_ms=READ_WAIT_MS)
            for records in fetched.values():
                for record in records:
                    apply_status(self.members, record.key, record.value)
            progress = time.monotonic() if fetched else progress
            if time.monotonic() - progress > READ_STALL_S:
                raise StreamError(f"{self._topic}: nothing read for {READ_STALL_S:.0f}s")
        return self.members

    async def aclose(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


async def read_statuses(settings: Settings) -> dict[str, dict[str, Any]]:
    """The latest status record of every member that has not left, by member key."""
    follower = StatusFollower(settings)
    try:
        return await follower.refresh()
    finally:
        await follower.aclose()


def apply_status(found: dict[str, dict[str, Any]], key: bytes | None, value: bytes | None) -> None:
    """Fold one status record into `found`: a tombstone removes its member."""
    if key is None:
        return
    member = key.decode(errors="replace")
    if value is None:
        found.pop(member, None)
        return
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return
    if isinstance(record, dict):
        found[member] = record
