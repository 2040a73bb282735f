"""Offsets that hold no record (transaction markers, aborted transactions) and the lag
gauges, over the engine's in-memory fakes: the committed offset and the lag reach the log
end once everything before it is settled, and an open transaction shows in a gauge."""

from __future__ import annotations

import logging

import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from test_engine import MAIN, engine, eventually, sms

from stream.devkit.fakes import FakeConsumer, ManualClock
from stream.engine.lag import STUCK_TRANSACTION_S, LagMonitor
from stream.engine.loop import LAG_REFRESH_S
from stream.engine.offsets import OffsetTracker, PartitionOffsets


def gauge(name: str, tp: TopicPartition) -> float | None:
    return REGISTRY.get_sample_value(name, {"topic": tp.topic, "partition": str(tp.partition)})


def test_skip_to_moves_the_commit_only_when_nothing_is_unsettled() -> None:
    offsets = PartitionOffsets()
    offsets.track([0, 1])
    offsets.skip_to(5)
    assert offsets.next_commit is None
    offsets.settle([0, 1])
    offsets.skip_to(5)
    assert offsets.next_commit == 5
    offsets.skip_to(3)
    assert offsets.next_commit == 5


async def test_commit_passes_markers_and_aborted_records_to_the_log_end() -> None:
    async with engine() as e:
        e.consumer.append(MAIN, sms(0))
        e.consumer.skip(MAIN, 3)  # an aborted transaction's two records and its marker
        e.consumer.append(MAIN, sms(1))
        e.consumer.skip(MAIN, 1)  # a commit marker
        await eventually(lambda: e.stored() == {"sms-0", "sms-1"}, what="both stored")
        e.clock.advance(LAG_REFRESH_S)
        await eventually(lambda: e.committed() == 6, what="commit at the log end")
        e.clock.advance(LAG_REFRESH_S)
        await eventually(
            lambda: gauge("stream_consumer_lag", MAIN) == 0, what="lag 0 on the gauge"
        )


async def test_a_partition_of_only_aborted_records_is_committed_to_its_end() -> None:
    async with engine() as e:
        e.consumer.skip(MAIN, 200)
        e.clock.advance(LAG_REFRESH_S)
        await eventually(lambda: e.committed() == 200, what="commit past the aborted records")
        assert e.stored() == set()


async def test_drain_commits_past_trailing_markers() -> None:
    async with engine() as e:
        e.consumer.append(MAIN, sms(0))
        e.consumer.skip(MAIN, 1)
        await eventually(lambda: e.stored() == {"sms-0"}, what="stored")
        await eventually(lambda: e.consumer.position(MAIN) == 2, what="marker passed")
        e.stop.set()
        assert await e.task
        assert e.committed() == 2


async def test_lag_counts_from_the_earliest_offset_before_any_commit() -> None:
    consumer, tracker = FakeConsumer(), OffsetTracker()
    tp = TopicPartition("lag-uncommitted", 0)
    for n in range(7):
        consumer.append(tp, sms(n))
    await consumer.assign({tp})
    tracker.partition(tp)
    await LagMonitor(consumer, ManualClock()).refresh({tp}, tracker)
    assert gauge("stream_consumer_lag", tp) == 7


async def test_open_transaction_shows_in_a_gauge_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer, tracker, clock = FakeConsumer(), OffsetTracker(), ManualClock()
    tp = TopicPartition("lag-open-transaction", 0)
    for n in range(5):
        consumer.append(tp, sms(n))
    await consumer.assign({tp})
    tracker.partition(tp).committed = 2
    consumer.stable_offsets[tp] = 2
    monitor = LagMonitor(consumer, clock)
    with caplog.at_level(logging.WARNING, logger="stream.engine.lag"):
        await monitor.refresh({tp}, tracker)
        assert gauge("stream_consumer_open_transaction_offsets", tp) == 3
        assert gauge("stream_consumer_lag", tp) == 3  # against the high watermark, not 2
        for _ in range(3):
            clock.advance(STUCK_TRANSACTION_S)
            await monitor.refresh({tp}, tracker)
    stuck = [r for r in caplog.records if "open transaction" in r.getMessage()]
    assert len(stuck) == 1
    consumer.stable_offsets[tp] = 5
    await monitor.refresh({tp}, tracker)
    assert gauge("stream_consumer_open_transaction_offsets", tp) == 0


class _RevokedWhileAskingTheStart(FakeConsumer):
    """A rebalance revokes everything while the lag monitor awaits the broker."""

    def __init__(self, monitor_forgets: list[LagMonitor]) -> None:
        super().__init__()
        self.monitor_forgets = monitor_forgets

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        revoked = self.assignment()
        await self.assign(set())
        for monitor in self.monitor_forgets:
            monitor.forget(revoked)  # what the loop's revocation callback does
        return await super().beginning_offsets(partitions)


async def test_a_partition_revoked_during_a_lag_refresh_gets_no_gauge() -> None:
    """A revocation in the refresh's awaits already dropped the partition's gauge: setting
    it afterwards would leave a lag series nobody updates."""
    monitors: list[LagMonitor] = []
    consumer, tracker = _RevokedWhileAskingTheStart(monitors), OffsetTracker()
    tp = TopicPartition("lag-revoked-meanwhile", 0)
    for n in range(4):
        consumer.append(tp, sms(n))
    await consumer.assign({tp})
    tracker.partition(tp)
    monitor = LagMonitor(consumer, ManualClock())
    monitors.append(monitor)
    await monitor.refresh({tp}, tracker)
    assert gauge("stream_consumer_lag", tp) is None
