"""Which offsets are safe to commit: only below the first record that is not yet settled.

Records of one partition are tracked in fetch order; settling can happen in any order (a
fast record may finish before a slow one fetched earlier), but the committable offset only
moves past a contiguous run of settled records. State lives in one `PartitionOffsets` per
assignment, so a batch still running after its partition was revoked settles into an
orphaned object and can never move the new owner's offsets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

__all__ = ["OffsetTracker", "PartitionOffsets"]


@dataclass(eq=False, slots=True)
class PartitionOffsets:
    """Offsets of one partition for one assignment: fetched, settled, committed.

    Compared by identity: two assignments of one partition are two objects.
    """

    _pending: deque[int] = field(default_factory=deque)
    _settled: set[int] = field(default_factory=set)
    next_commit: int | None = None
    """One past the end of the settled prefix: what a commit would store."""
    committed: int | None = None
    """What the group has committed for this partition, as far as this member knows."""
    fetched_to: int | None = None
    """One past the last offset fetched in this assignment: where the client's position
    stood before its next fetch (None: nothing fetched yet)."""

    def track(self, offsets: Iterable[int]) -> None:
        """Record fetched offsets; they must arrive in increasing order."""
        pending = self._pending
        before = len(pending)
        pending.extend(offsets)
        if len(pending) > before:
            self.fetched_to = pending[-1] + 1

    def skip_to(self, position: int) -> None:
        """The client's position passed offsets that hold no record for us (transaction
        markers, aborted transactions, compacted gaps): with nothing unsettled, every
        offset below `position` is settled, so a commit may store it."""
        if self._pending:
            return
        known = max((o for o in (self.next_commit, self.committed) if o is not None), default=0)
        if position > known:
            self.next_commit = position

    def settle(self, offsets: Iterable[int]) -> None:
        """Mark offsets durable; advance `next_commit` over the settled prefix."""
        self._settled.update(offsets)
        pending, settled = self._pending, self._settled
        while pending and pending[0] in settled:
            offset = pending.popleft()
            settled.discard(offset)
            self.next_commit = offset + 1

    @property
    def unsettled(self) -> int:
        return len(self._pending)

    @property
    def first_unsettled(self) -> int | None:
        return self._pending[0] if self._pending else None


class OffsetTracker:
    """Per-partition offsets of the current assignment."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}

    def partition(self, tp: TopicPartition) -> PartitionOffsets:
        state = self._partitions.get(tp)
        if state is None:
            state = self._partitions[tp] = PartitionOffsets()
        return state

    def committable(self, tps: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Offsets that moved since the last commit (all partitions, or just `tps`)."""
        chosen = (
            self._partitions
            if tps is None
            else {tp: self._partitions[tp] for tp in tps if tp in self._partitions}
        )
        return {
            tp: state.next_commit
            for tp, state in chosen.items()
            if state.next_commit is not None and state.next_commit != state.committed
        }

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            state = self._partitions.get(tp)
            if state is not None:
                state.committed = offset

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drop revoked partitions; batches still holding their state settle into the void."""
        for tp in tps:
            self._partitions.pop(tp, None)

    def restart(self, tp: TopicPartition) -> int | None:
        """Abandon the unsettled work of `tp` (batches still holding it settle into the
        void); return the offset to read again from, None when nothing was unsettled."""
        old = self._partitions.get(tp)
        if old is None:
            return None
        resume_at = old.first_unsettled
        self._partitions[tp] = PartitionOffsets(
            next_commit=old.next_commit,
            committed=old.committed,
            fetched_to=old.fetched_to if resume_at is None else resume_at,
        )
        return resume_at

    def committed(self, tp: TopicPartition) -> int | None:
        state = self._partitions.get(tp)
        return None if state is None else state.committed
