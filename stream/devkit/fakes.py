"""In-memory doubles of the engine's ports, for unit tests of the engine without servers.

They behave like the real parts in what the engine relies on, and no more:

    FakeConsumer   a group member over in-memory partitions: positions, pause/resume,
                   seek, commits (can be made to fail), rebalances driven by the test
    FakeSink       documents by `_id`, insert-if-absent; can refuse ids, hold writes, or
                   refuse every write (a server-wide fault)
    FakePublisher  records by topic, acknowledged at once or held (a Kafka outage)
    ManualClock    time that moves only when the test calls `advance` or sets `now`
    ScriptedProcessor  outcomes chosen per SMS id (transient, permanent, systemic, held)
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from stream.engine.failures import Delivery
from stream.engine.ports import DocumentRejected, WriteOutcome
from stream.errors import PermanentError, SystemicError, TransientError
from stream.sms.models import Outcome, Sms

__all__ = [
    "FakeConsumer",
    "FakePublisher",
    "FakeSink",
    "ManualClock",
    "ScriptedProcessor",
]


class ManualClock:
    """Wall and monotonic time that advance together, only when a test (or a simulation)
    moves them. Monotonic seconds start at 0 and are exactly what was set, so a limiter's
    instants compare without rounding; wall time is `start` plus them."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._start = start
        self._now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self._start + self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + seconds, future))
        await future

    @property
    def sleepers(self) -> int:
        """How many `sleep` calls are waiting for time to move."""
        return sum(1 for _, future in self._sleepers if not future.done())

    @property
    def now(self) -> float:
        """Monotonic seconds; setting it moves time to that instant (never back)."""
        return self._now

    @now.setter
    def now(self, instant: float) -> None:
        if instant < self._now:
            raise ValueError(f"time does not go back: {instant} < {self._now}")
        self._now = instant
        due = [(at, f) for at, f in self._sleepers if at <= instant]
        self._sleepers = [(at, f) for at, f in self._sleepers if at > instant]
        for _, future in due:
            if not future.done():
                future.set_result(None)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose time has come."""
        self.now = self._now + seconds


class FakeConsumer:
    """A consumer-group member over in-memory partitions.

    `append` adds records; `assign` simulates a rebalance (revoking the old assignment
    through the listener first, as aiokafka's eager protocol does); `fail_commits` makes
    the next commits raise a KafkaError. Like aiokafka, `subscribe` drops the assignment
    at once (the listener hears of it at the next rebalance), and `seek`, `pause`,
    `resume` and `commit` raise IllegalStateError for a partition not assigned.
    """

    def __init__(self) -> None:
        self.logs: defaultdict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = (
            defaultdict(list)
        )
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.commit_calls: list[dict[TopicPartition, int]] = []
        self.topics: list[str] = []
        self._listener: ConsumerRebalanceListener | None = None
        self._assignment: set[TopicPartition] = set()
        self._unsubscribed: set[TopicPartition] = set()
        """The assignment `subscribe` dropped: revoked through the listener at the next
        rebalance, as aiokafka does."""
        self._paused: set[TopicPartition] = set()
        self._position: dict[TopicPartition, int] = {}
        self._arrived = asyncio.Event()
        self._commit_failures = 0
        self.commit_hang = False
        self._gaps: defaultdict[TopicPartition, set[int]] = defaultdict(set)
        self.undecodable: set[tuple[TopicPartition, int]] = set()
        """Records `getmany` fails on as aiokafka does on a header key that is not UTF-8:
        UnicodeDecodeError, after moving the positions of the partitions taken before."""
        self.stable_offsets: dict[TopicPartition, int] = {}
        """Last stable offsets the test set (an open transaction); else the log end."""
        self.fetches = 0
        """`getmany` calls answered: a test waits on it to see the loop keep fetching."""

    # ----------------------------------------------------------------- test controls

    def append(
        self,
        tp: TopicPartition,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        timestamp_ms: int = 0,
    ) -> int:
        """Add one record to a partition's log; returns its offset."""
        log = self.logs[tp]
        offset = len(log)
        log.append(
            ConsumerRecord(
                topic=tp.topic,
                partition=tp.partition,
                offset=offset,
                timestamp=timestamp_ms,
                timestamp_type=0,
                key=key,
                value=value,
                checksum=None,
                serialized_key_size=len(key or b""),
                serialized_value_size=len(value or b""),
                headers=tuple(headers),
            )
        )
        self._arrived.set()
        return offset

    async def assign(self, tps: set[TopicPartition]) -> None:
        """A rebalance: revoke everything (listener first), then assign `tps`, none of
        them paused (aiokafka starts every new assignment fetchable)."""
        revoked = self._assignment | self._unsubscribed
        self._unsubscribed = set()
        if self._listener is not None and revoked:
            await self._listener.on_partitions_revoked(revoked)
        self._assignment = set(tps)
        self._paused.clear()
        for tp in tps:
            self._position[tp] = self.committed_offsets.get(tp, 0)
        if self._listener is not None:
            await self._listener.on_partitions_assigned(set(tps))
        self._arrived.set()

    def fail_commits(self, times: int) -> None:
        self._commit_failures = times

    def position(self, tp: TopicPartition) -> int:
        return self._position[tp]

    def skip(self, tp: TopicPartition, count: int) -> None:
        """Offsets that hold no record for a reader (transaction markers, aborted
        records): they move the log end, and a position that reaches them passes them."""
        self._gaps[tp].update(range(len(self.logs[tp]), len(self.logs[tp]) + count))
        self.logs[tp].extend([None] * count)
        self._arrived.set()

    # ----------------------------------------------------------------- the consumer API

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None:
        self.topics = list(topics)
        self._listener = listener
        self._unsubscribed |= self._assignment
        self._assignment = set()
        self._paused.clear()

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, *partitions: TopicPartition) -> None:
        self._require_assigned(partitions)
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._require_assigned(partitions)
        self._paused.difference_update(partitions)
        self._arrived.set()

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._require_assigned([partition])
        self._position[partition] = offset

    def _require_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """aiokafka raises IllegalStateError for a partition of no current assignment."""
        unassigned = set(partitions) - self._assignment
        if unassigned:
            raise IllegalStateError(f"No current assignment for partition {unassigned}")

    def highwater(self, partition: TopicPartition) -> int | None:
        self._check_assigned(partition)
        return len(self.logs[partition])

    def last_stable_offset(self, partition: TopicPartition) -> int | None:
        self._check_assigned(partition)
        return self.stable_offsets.get(partition, len(self.logs[partition]))

    def _check_assigned(self, partition: TopicPartition) -> None:
        """aiokafka asserts that a partition asked about is assigned (an AssertionError)."""
        assert partition in self._assignment, "Partition is not assigned"

    async def read_position(self, partition: TopicPartition) -> int:
        return self._position[partition]

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.logs[tp]) for tp in partitions}

    async def read_raw(
        self, partition: TopicPartition, offset: int
    ) -> tuple[list[ConsumerRecord[bytes, bytes]], int]:
        """The whole rest of the log is one batch here, undecodable records included."""
        log = self.logs[partition]
        gaps = self._gaps[partition]
        return [r for n, r in enumerate(log) if n >= offset and n not in gaps], len(log)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """Records after each position of the fetchable partitions (of `partitions`, when
        given); waits (real time, at most `timeout_ms`) for an append or a resume when
        there are none."""
        self.fetches += 1
        fetched = self._take(max_records, partitions)
        if not fetched and timeout_ms > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout_ms / 1000)
            except TimeoutError:
                return {}
            fetched = self._take(max_records, partitions)
        return fetched

    def _take(
        self, max_records: int | None, only: tuple[TopicPartition, ...] = ()
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        room = max_records if max_records is not None else 1 << 30
        fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        for tp in sorted(self._assignment - self._paused):
            if only and tp not in only:
                continue
            if room <= 0:
                break
            end = self._position[tp]
            log = self.logs[tp]
            records: list[ConsumerRecord[bytes, bytes]] = []
            while end < len(log) and len(records) < room:
                if (tp, end) in self.undecodable:
                    raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
                if end not in self._gaps[tp]:
                    records.append(log[end])
                end += 1
            self._position[tp] = end
            if records:
                fetched[tp] = records
                room -= len(records)
        return fetched

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.commit_hang:
            await asyncio.Event().wait()
        if self._commit_failures > 0:
            self._commit_failures -= 1
            raise KafkaError("the coordinator is not available (fake)")
        self._require_assigned(list(offsets))
        self.commit_calls.append(dict(offsets))
        self.committed_offsets.update(offsets)

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.committed_offsets.get(partition)


class FakeSink:
    """Documents by `_id`, insert-if-absent, like the Mongo sink."""

    def __init__(self, *, refuse: set[str] | None = None) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.writes = 0
        self.refuse = set(refuse or ())
        self.refusing: SystemicError | None = None
        self.open = asyncio.Event()
        self.open.set()

    async def write(self, documents: Sequence[dict[str, Any]]) -> WriteOutcome:
        """Waits while `open` is clear (MongoDB down); raises `refusing` when set (the
        sink's bound on a server-wide refusal has passed); refuses ids in `refuse`."""
        await self.open.wait()
        if self.refusing is not None:
            raise self.refusing
        self.writes += 1
        inserted = 0
        rejected: list[DocumentRejected] = []
        for index, document in enumerate(documents):
            if document["_id"] in self.refuse:
                rejected.append(DocumentRejected(index, "document is not storable (fake)"))
            elif document["_id"] not in self.documents:
                self.documents[document["_id"]] = document
                inserted += 1
        return WriteOutcome(inserted, rejected)


class FakePublisher:
    """Records by topic; `open` cleared holds every publish (Kafka unavailable)."""

    def __init__(self) -> None:
        self.published: defaultdict[str, list[Delivery]] = defaultdict(list)
        self.open = asyncio.Event()
        self.open.set()

    async def publish(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            await self.open.wait()
        for delivery in deliveries:
            self.published[delivery.topic].append(delivery)


@dataclass
class ScriptedProcessor:
    """Outcomes chosen per SMS id, no I/O.

    `transient[id]` = how many attempts fail transiently before success (with
    `retry_after[id]` as the upstream's hint); `permanent` ids always fail; `systemic`
    makes every SMS meet a systemic fault until cleared; `held[id]` blocks that SMS until
    the event is set.
    """

    name: str = "scripted"
    transient: dict[str, int] = field(default_factory=dict)
    retry_after: dict[str, float] = field(default_factory=dict)
    permanent: set[str] = field(default_factory=set)
    systemic: SystemicError | None = None
    held: dict[str, asyncio.Event] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    probes: int = 0

    async def _one(self, sms: Sms) -> Outcome:
        self.attempts[sms.id] = self.attempts.get(sms.id, 0) + 1
        if sms.id in self.held:
            await self.held[sms.id].wait()
        if self.systemic is not None:
            return self.systemic
        if sms.id in self.permanent:
            return PermanentError("upstream said 422", reason="http_422")
        if self.transient.get(sms.id, 0) >= self.attempts[sms.id]:
            return TransientError(
                "upstream said 503", reason="http_503", retry_after=self.retry_after.get(sms.id)
            )
        return {"category": "other"}

    async def process_many(self, batch: Sequence[Sms]) -> list[Outcome]:
        return list(await asyncio.gather(*(self._one(sms) for sms in batch)))

    async def probe(self) -> SystemicError | None:
        self.probes += 1
        return self.systemic

    async def aclose(self) -> None:
        return None
