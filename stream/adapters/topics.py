"""The topic reconciler: the one place that creates and checks the topics a member uses
(and the status topic the members report to, created when the first report is sent).

The main topic, its retry ladder (`<topic>.retry.<n>`) and its DLQ are read from the
broker at start-up and again every `STREAM_METADATA_REFRESH`. Each time:
- the main topic must exist (or is created with `STREAM_CREATE_TOPIC`; at start-up only);
- the retry topics STREAM_RETRY_DELAYS configures and the DLQ are created when missing;
  when creation is refused while running, publishing to that topic halts consumption
  (`topic_missing`) until a later check finds it again;
- every retry topic that exists for the main topic, configured here or not, is consumed,
  so records left in levels an older or newer version wrote are not stranded;
- retry and DLQ topics with fewer partitions than the main topic grow to its count, so
  partitions added to the main topic spread their failures like the others (a copy is
  published by key, so it reaches its topic whatever that topic's partition count).
When the consumed topics or their partition counts change, every member subscribes again,
so the member the broker holds as leader joins again, which makes the broker rebalance the
group onto the new partitions. That holds when the leader does not know it leads: a static
leader that restarted is told it follows (aiokafka's JoinGroup predates KIP-814), and
aiokafka watches metadata for added partitions only in a member that knows it leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import KafkaError

from stream.adapters.kafka import client_options, start_admin
from stream.config import Settings
from stream.engine.halt import Halted
from stream.errors import StreamError, SystemicError

__all__ = [
    "DEFAULT_PARTITIONS",
    "MISSING_TOPIC_REASON",
    "STATUS_TOPIC_CONFIGS",
    "TopicReconciler",
    "Topology",
    "ensure_status_topic",
    "ensure_topics",
    "status_topic",
]

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 6
"""Partitions of a main topic we create ourselves: room for six replicas of the group."""
MAX_REPLICATION = 3
"""Retry and DLQ topics hold records we promised not to lose: replicate like the cluster can."""
FULL_REPLICATION_MIN_ISR = "2"
"""With 3 replicas, an acks=all write waits for 2: one broker may die without losing an
acknowledged record or stopping writes."""
MISSING_TOPIC_REASON = "topic_missing"
RECONCILE_TIMEOUT_S = 30.0
"""One check is a few admin requests; past this the broker is unwell and the next try waits
for the next interval."""
FAILURE_LOG_EVERY_S = 300.0
"""A broker away fails every check; say so every few minutes, not every interval."""

_TOPIC_ALREADY_EXISTS = 36


STATUS_TOPIC_CONFIGS = {
    "cleanup.policy": "compact",
    "segment.ms": "3600000",
    "min.compaction.lag.ms": "0",
}
"""Compacted (an auto-created topic would not be), with hourly segments so compaction can
run: the topic holds about one record per member plus the last hour's."""



def status_topic(topic: str) -> str:
    """Where members report their state: matches neither `<topic>.retry.<n>` nor the DLQ."""
    return f"{topic}.status"


async def ensure_status_topic(settings: Settings) -> None:
    """Create `<topic>.status` (one partition, compacted) unless it exists.

    Called by the status reporter before its first record, not by the reconciler's start-up
    checks: a member must process SMS even where it may not create the status topic. One
    plain connection attempt, since the reporter tries again at its next interval."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:  # a start cancelled or failed mid-bootstrap may hold a connection: close it too
        await admin.start()
        name = status_topic(settings.topic)
        if name in await admin.list_topics():
            return
        brokers = len((await admin.describe_cluster())["brokers"])
        new = NewTopic(name, 1, min(MAX_REPLICATION, brokers), topic_configs=STATUS_TOPIC_CONFIGS)
        response = await admin.create_topics([new])
        for topic, code, *rest in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise StreamError(f"cannot create topic {topic}: error {code} {rest}")
    finally:
        await admin.close()


@dataclass(frozen=True)
class Topology:
    """What the broker holds for one main topic: partition counts and the retry ladder."""

    topic: str
    partitions: Mapping[str, int]
    """Partitions of each existing topic of the family (main, retry levels, DLQ)."""
    retry_topics: tuple[str, ...]
    """Every existing retry topic of the main topic, by level: the ones consumed."""
    extra_levels: tuple[int, ...]
    """Levels found on the broker that STREAM_RETRY_DELAYS does not configure."""

    @property
    def consumed(self) -> dict[str, int]:
        """Partitions of each consumed topic: a change makes the member join again."""
        return {t: self.partitions[t] for t in (self.topic, *self.retry_topics)}


class TopicReconciler:
    """Keeps the topic family as the settings need it; `async with` holds its admin client."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin: AIOKafkaAdminClient | None = None
        self._faults: dict[str, str] = {}
        self._fault_added = asyncio.Event()
        self._failure_logged = -FAILURE_LOG_EVERY_S
        self.topology: Topology | None = None

    async def __aenter__(self) -> TopicReconciler:
        self._admin = await start_admin(self._settings)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._admin is not None:
            await self._admin.close()

    @property
    def admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise RuntimeError("TopicReconciler used outside `async with`")
        return self._admin

    async def reconcile(self, *, start_up: bool = False) -> Topology:
        """Check and repair the topic family once; return what the broker now holds.

        At start-up a missing main topic (without STREAM_CREATE_TOPIC) or a topic that
        cannot be created raises StreamError; later a refused creation is kept as a fault
        (`fault`, `wait_fault`, `probe`) and logged.
        """
        settings = self._settings
        admin = self.admin
        names = set(await admin.list_topics())
        family = sorted(
            t for t in names if t in (settings.topic, settings.dlq_topic) or settings.retry_level(t)
        )
        partitions = await self._partitions(family)
        for topic in [t for t in self._faults if t in partitions]:
            del self._faults[topic]
            log.info("topic %s exists again", topic)
        main = partitions.get(settings.topic)
        if main is None:
            if not start_up:
                raise StreamError(f"topic {settings.topic!r} disappeared from the broker")
            if not settings.create_topic:
                raise StreamError(
                    f"topic {settings.topic!r} does not exist at {settings.kafka_bootstrap}; "
                    "check STREAM_TOPIC, or set STREAM_CREATE_TOPIC=true to create it"
                )
            main = DEFAULT_PARTITIONS
        wanted = [settings.topic, *settings.retry_topics, settings.dlq_topic]
        created, raced = await self._create(
            [t for t in wanted if t not in partitions], main, start_up
        )
        partitions |= dict.fromkeys(created, main) | await self._partitions(raced)
        derived = {t: n for t, n in partitions.items() if t != settings.topic}
        if await self._grow(derived, main):
            partitions |= {t: max(n, main) for t, n in derived.items()}
        retry_topics = tuple(sorted((t for t in partitions if settings.retry_level(t)),
                                    key=settings.retry_level))
        configured = len(settings.retry_delays_s)
        extra = tuple(
            level for level in map(settings.retry_level, retry_topics) if level > configured
        )
        previous = self.topology
        if extra and (previous is None or previous.extra_levels != extra):
            log.warning(
                "consuming retry levels STREAM_RETRY_DELAYS does not configure: their records "
                "are processed, and what fails again goes to the DLQ",
                extra={"levels": list(extra), "configured": configured},
            )
        self.topology = Topology(settings.topic, partitions, retry_topics, extra)
        return self.topology

    async def _partitions(self, topics: list[str]) -> dict[str, int]:
        if not topics:
            return {}
        described = await self.admin.describe_topics(topics)
        return {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}

    async def _create(
        self, missing: list[str], partitions: int, start_up: bool
    ) -> tuple[list[str], list[str]]:
        """Create `missing` like the main topic; return those created, and those someone
        else created meanwhile (with whatever partitions they got)."""
        if not missing:
            return [], []
        brokers = len((await self.admin.describe_cluster())["brokers"])
        replication = min(MAX_REPLICATION, brokers)
        configs = ({"min.insync.replicas": FULL_REPLICATION_MIN_ISR}
                   if replication == MAX_REPLICATION else {})
        response = await self.admin.create_topics(
            [NewTopic(t, partitions, replication, topic_configs=configs) for t in missing]
        )
        created: list[str] = []
        raced: list[str] = []
        for topic, code, *rest in response.topic_errors:
            if code in (0, _TOPIC_ALREADY_EXISTS):
                (created if code == 0 else raced).append(topic)
                self._faults.pop(topic, None)
                continue
            detail = " ".join(str(part) for part in rest if part) or f"error {code}"
            message = f"topic {topic} does not exist and cannot be created: {detail}"
            if start_up:
                raise StreamError(message)
            if topic not in self._faults:
                log.error("%s; create it, or let this member create topics", message,
                          extra={"topic": topic, "error_code": code})
                self._faults[topic] = message
                self._fault_added.set()
                self._fault_added = asyncio.Event()
        if created:
            log.info("created topics", extra={"topics": created, "partitions": partitions})
        return created, raced

    async def _grow(self, partitions: Mapping[str, int], main: int) -> bool:
        """Give retry and DLQ topics the main topic's partitions; False when refused, which
        is only logged (their copies are published by key, onto any partition count)."""
        short = {t: NewPartitions(main) for t, n in partitions.items() if n < main}
        if not short:
            return True
        try:
            await self.admin.create_partitions(short)
        except KafkaError as exc:
            log.warning("cannot add partitions to %s: %s", ", ".join(short), exc)
            return False
        log.info("added partitions to follow the main topic",
                 extra={"topics": sorted(short), "partitions": main})
        return True

    def fault(self, topics: Iterable[str]) -> Halted | None:
        """The halt publishing to `topics` meets: one of them is missing for good."""
        for topic in topics:
            message = self._faults.get(topic)
            if message is not None:
                return Halted(MISSING_TOPIC_REASON, message, "", probe=True)
        return None

    async def wait_fault(self, topics: Iterable[str]) -> Halted:
        """Wait until one of `topics` is found missing for good; return its halt."""
        wanted = set(topics)
        while True:
            fault = self.fault(wanted)
            if fault is not None:
                return fault
            await self._fault_added.wait()

    async def probe(self) -> SystemicError | None:
        """While halted: check again (creating what is missing); the fault that remains."""
        with contextlib.suppress(KafkaError, OSError, TimeoutError, StreamError):
            await asyncio.wait_for(self.reconcile(), RECONCILE_TIMEOUT_S)  # else: faults stand
        if not self._faults:
            return None
        message = next(iter(self._faults.values()))
        return SystemicError(message, reason=MISSING_TOPIC_REASON)

    async def watch(self, changed: Callable[[Topology], None]) -> None:
        """Every STREAM_METADATA_REFRESH: reconcile; call `changed` when the consumed topics
        or their partition counts differ from those of the last call (or of the check before
        the first: the one the member subscribed with)."""
        subscribed = None if self.topology is None else self.topology.consumed
        while True:
            await asyncio.sleep(self._settings.metadata_refresh_s)
            try:
                after = await asyncio.wait_for(self.reconcile(), RECONCILE_TIMEOUT_S)
            except (KafkaError, OSError, TimeoutError, StreamError) as exc:
                now = asyncio.get_running_loop().time()
                if now - self._failure_logged >= FAILURE_LOG_EVERY_S:
                    self._failure_logged = now
                    log.warning("checking the topics failed; trying again: %s", exc)
                continue
            if after.consumed != subscribed:
                log.info("consumed topics changed; joining the group again",
                         extra={"partitions": after.consumed})
                subscribed = after.consumed
                changed(after)


async def ensure_topics(settings: Settings) -> int:
    """Reconcile once (as at a member's start-up); return the main topic's partitions.

    Raises KafkaUnavailable when no bootstrap server answers, StreamError when the main
    topic is missing (without STREAM_CREATE_TOPIC) or a topic cannot be created.
    """
    async with TopicReconciler(settings) as reconciler:
        topology = await reconciler.reconcile(start_up=True)
    return topology.partitions[settings.topic]
