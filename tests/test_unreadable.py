"""A batch the Kafka client cannot decode (a header key that is not UTF-8), over the
engine's fakes: getmany fails as aiokafka's does, after moving the positions of the
partitions it had already taken; every record is still processed once and committed."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from support import turns
from test_engine import MAIN, RETRY_1, RETRY_2, engine, eventually, sms

from stream.devkit.fakes import FakeConsumer
from stream.engine import unreadable


async def test_records_taken_before_the_failure_and_the_unreadable_batch_are_all_processed(
) -> None:
    async with engine() as e:
        for n in range(5):
            e.consumer.append(MAIN, sms(n))
        for n in range(5, 8):
            e.consumer.append(RETRY_1, sms(n))
        e.consumer.undecodable.add((RETRY_1, 1))
        await eventually(
            lambda: e.stored() == {f"sms-{n}" for n in range(8)}, what="all 8 stored"
        )
        await e.settled()
        assert e.topic("sms.dlq") == []
        assert e.committed(MAIN) == 5
        assert e.committed(RETRY_1) == 3


class _RevokedWhileReadingRaw(FakeConsumer):
    """A rebalance revokes the partition while its unreadable batch is being read, as a
    real group's can during any await on the broker."""

    def __init__(self) -> None:
        super().__init__()
        self.revoke_once: set[TopicPartition] | None = None

    async def read_raw(
        self, partition: TopicPartition, offset: int
    ) -> tuple[list[ConsumerRecord[bytes, bytes]], int]:
        if self.revoke_once is not None:
            keep, self.revoke_once = self.revoke_once, None
            await self.assign(keep)
        return await super().read_raw(partition, offset)


async def test_a_revocation_during_the_unreadable_read_loses_nothing() -> None:
    """The records gathered before the revocation are neither committed past (no gap skip
    while they are untracked) nor kept for a partition no longer assigned (no seek on it,
    no tracker state for it); once assigned again they are all read and committed."""
    consumer = _RevokedWhileReadingRaw()
    consumer.revoke_once = {MAIN, RETRY_2}
    async with engine(consumer=consumer) as e:
        for n in range(3):
            e.consumer.append(RETRY_1, sms(n))
        e.consumer.undecodable.add((RETRY_1, 1))
        await eventually(lambda: consumer.revoke_once is None, what="revoked while reading")
        await turns(e.loop)
        assert e.committed(RETRY_1) is None, "nothing committed past the gathered records"
        assert e.processor.attempts == {}, "nothing processed of a partition not assigned"
        assert not e.task.done(), "the loop is still running"
        await e.consumer.assign({MAIN, RETRY_1, RETRY_2})
        await eventually(
            lambda: e.stored() == {f"sms-{n}" for n in range(3)}, what="all 3 stored"
        )
        await e.settled()


class _RawReadHangs(FakeConsumer):
    """A broker that takes the raw read and never answers, until the test lets it."""

    def __init__(self) -> None:
        super().__init__()
        self.answering = asyncio.Event()
        self.raw_reads = 0

    async def read_raw(
        self, partition: TopicPartition, offset: int
    ) -> tuple[list[ConsumerRecord[bytes, bytes]], int]:
        self.raw_reads += 1
        await self.answering.wait()
        return await super().read_raw(partition, offset)


async def test_a_raw_read_the_broker_never_answers_does_not_hold_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The raw read has a deadline: past it the loop goes on (and finds the batch again at
    the next fetch) instead of waiting on the broker for ever."""
    monkeypatch.setattr(unreadable, "READ_TIMEOUT_S", 0.05)
    consumer = _RawReadHangs()
    async with engine(consumer=consumer) as e:
        for n in range(3):
            e.consumer.append(RETRY_1, sms(n))
        e.consumer.undecodable.add((RETRY_1, 1))
        await eventually(lambda: consumer.raw_reads >= 2, what="the raw read tried again")
        consumer.answering.set()
        await eventually(
            lambda: e.stored() == {f"sms-{n}" for n in range(3)}, what="all 3 stored"
        )
        await e.settled()


class _StartUnknown(FakeConsumer):
    """A broker that cannot say where a partition starts."""

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        raise KafkaError("the broker is not available (fake)")


async def test_records_taken_before_the_failure_are_read_when_the_log_start_is_unknown(
) -> None:
    """A partition with no commit and nothing fetched is rewound even when the broker
    cannot say where it starts (to offset 0, below which the client resets to the
    earliest): the records the failed fetch took from it are not skipped."""
    async with engine(consumer=_StartUnknown()) as e:
        for n in range(5):
            e.consumer.append(MAIN, sms(n))
        for n in range(5, 8):
            e.consumer.append(RETRY_1, sms(n))
        e.consumer.undecodable.add((RETRY_1, 1))
        await eventually(
            lambda: e.stored() == {f"sms-{n}" for n in range(8)}, what="all 8 stored"
        )
        await e.settled()
