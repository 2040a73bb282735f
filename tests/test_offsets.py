"""Commit safety: the committable offset never passes a record that is not settled."""

from __future__ import annotations

from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from stream.engine.offsets import OffsetTracker, PartitionOffsets

TP = TopicPartition("t", 0)


def test_commit_waits_for_slow_middle_record() -> None:
    offsets = PartitionOffsets()
    offsets.track(range(10, 15))
    offsets.settle([10, 11, 13, 14])
    assert offsets.next_commit == 12
    offsets.settle([12])
    assert offsets.next_commit == 15
    assert offsets.unsettled == 0


def test_committable_reports_only_moved_partitions() -> None:
    tracker = OffsetTracker()
    state = tracker.partition(TP)
    state.track([0, 1])
    assert tracker.committable() == {}
    state.settle([0, 1])
    assert tracker.committable() == {TP: 2}
    tracker.mark_committed({TP: 2})
    assert tracker.committable() == {}
    assert tracker.committed(TP) == 2


def test_forgotten_partition_cannot_move_new_owner_state() -> None:
    tracker = OffsetTracker()
    old = tracker.partition(TP)
    old.track([5])
    tracker.forget([TP])
    new = tracker.partition(TP)
    new.track([5, 6])
    old.settle([5])
    assert tracker.committable() == {}
    assert new is not old


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_next_commit_is_end_of_settled_prefix(order: list[int], settled_count: int) -> None:
    offsets = PartitionOffsets()
    offsets.track(range(30))
    settled = order[:settled_count]
    offsets.settle(settled)
    prefix = 0
    while prefix in settled:
        prefix += 1
    assert offsets.next_commit == (prefix if prefix else None)
