"""The small interfaces the engine drives; `adapters/` and `processors/` implement them.

The engine never builds a client: the composition root (`stream.app`) hands it objects
that satisfy these protocols, and the unit tests hand it the in-memory doubles of
`stream.devkit.fakes`. Everything here is structural (`typing.Protocol`), so implementers
need not import the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition

from stream.engine.failures import Delivery
from stream.errors import SystemicError
from stream.sms.models import Outcome, Sms

__all__ = [
    "Consumer",
    "DocumentRejected",
    "Processor",
    "Publisher",
    "Sink",
    "WriteOutcome",
]


@dataclass(frozen=True, slots=True)
class DocumentRejected:
    """A document the server refused for good: goes to the DLQ with `reason` as its error
    class (`unstorable`: a field the server cannot store; `duplicate_key`: a unique index
    other than `_id` holds another SMS with the same key)."""

    index: int
    message: str
    reason: str = "unstorable"


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """How many documents were new, and which the server refused for good."""

    inserted: int
    rejected: list[DocumentRejected] = field(default_factory=list)


class Processor(Protocol):
    """Turns a batch of SMS into one outcome each, in order; never raises for one SMS."""

    name: str

    async def process_many(self, batch: Sequence[Sms]) -> list[Outcome]: ...

    async def probe(self) -> SystemicError | None:
        """While halted: one cheap call that tells whether the systemic fault persists."""
        ...


class Sink(Protocol):
    """Stores documents idempotently by `_id`; returns only once they are durable, or
    raises `SystemicError` when the server has refused every write for longer than its
    bound (not any document's fault: the engine halts, and the probe resumes)."""

    async def write(self, documents: Sequence[dict[str, Any]]) -> WriteOutcome: ...


class Publisher(Protocol):
    """Publishes retry/DLQ records; returns only once the broker acknowledged every one."""

    async def publish(self, deliveries: Sequence[Delivery]) -> None: ...


class Consumer(Protocol):
    """The part of `aiokafka.AIOKafkaConsumer` the loop uses (a group member, manual commits).

    Network calls, which the caller bounds (`asyncio.wait_for`): `commit`, `committed`,
    `beginning_offsets`, `end_offsets`, `read_raw`, and `read_position` (it may have to ask
    the broker where to start). `getmany` is bounded by its `timeout_ms`; the other calls
    are local. The network calls raise `aiokafka.errors.KafkaError` when the broker refuses
    or cannot be reached. `seek`, `pause`, `resume` and `commit` raise `IllegalStateError`
    (a KafkaError) for a partition not assigned, and `subscribe` drops the assignment at
    once. `getmany` raises `UnicodeDecodeError` for a batch with a header key that is not
    UTF-8 (aiokafka decodes keys), which `read_raw` reads instead.
    """

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def paused(self) -> set[TopicPartition]: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    def last_stable_offset(self, partition: TopicPartition) -> int | None: ...

    async def read_position(self, partition: TopicPartition) -> int:
        """The offset the client reads next (aiokafka's `position`)."""
        ...

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]: ...

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...

    async def read_raw(
        self, partition: TopicPartition, offset: int
    ) -> tuple[list[ConsumerRecord[bytes, bytes]], int]:
        """The records of the batch holding `offset`, from `offset` on, read without the
        client's record decoder; and the offset after that batch (raises KafkaError)."""
        ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    async def committed(self, partition: TopicPartition) -> int | None: ...
