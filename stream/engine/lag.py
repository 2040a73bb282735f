"""Consumer lag and open transactions, per assigned partition, for dashboards and alerts.

Lag is the high watermark (the log end every producer's records reach, committed or not)
minus the group's committed offset. A partition with no commit yet counts from its
earliest offset, so a partition nobody has consumed still shows its backlog. Before the
first fetch response of a partition (e.g. one paused since it was assigned) the client
knows no high watermark; the broker's end offset stands in for it (under
`read_committed` that is the last stable offset).

Under `read_committed` the consumer reads only up to the last stable offset: a producer
that leaves a transaction open holds back everything behind it. The distance from the
last stable offset to the high watermark is a gauge of its own, and a partition whose
last stable offset stays put behind the high watermark for `STUCK_TRANSACTION_S` is said
once in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from stream.clock import Clock
from stream.engine.offsets import OffsetTracker
from stream.engine.ports import Consumer
from stream.observability import metrics

__all__ = ["STUCK_TRANSACTION_S", "LagMonitor"]

log = logging.getLogger(__name__)

_OffsetsQuery = Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]]
"""`Consumer.end_offsets` or `Consumer.beginning_offsets`."""

STUCK_TRANSACTION_S = 300.0
"""Exactly-once producers keep a transaction open for one commit interval (Kafka Streams:
100 ms; Flink: one checkpoint, often a minute or more); five minutes without the last
stable offset moving is past any healthy one, and the broker's transaction timeout."""
OFFSETS_TIMEOUT_S = 1.0
"""Asking the broker for a partition's bounds is only for the gauges: never hold the loop long."""
EARLIEST_REFRESH_S = 60.0
"""The earliest offset moves only with retention: ask again once a minute, not on every
refresh of every partition that has no commit (retry partitions often have none)."""


@dataclass(slots=True)
class _Stable:
    """Where a partition's last stable offset stood behind its high watermark, and since."""

    offset: int
    since: float
    logged: bool = False


class LagMonitor:
    """Sets the lag and open-transaction gauges of the assigned partitions."""

    def __init__(self, consumer: Consumer, clock: Clock) -> None:
        self._consumer = consumer
        self._clock = clock
        self._stable: dict[TopicPartition, _Stable] = {}
        self._earliest: dict[TopicPartition, int] = {}
        self._earliest_asked = -EARLIEST_REFRESH_S

    async def refresh(self, assigned: Iterable[TopicPartition], tracker: OffsetTracker) -> None:
        """Set both gauges of every partition in `assigned` (a second is plenty often)."""
        ends: dict[TopicPartition, int] = {}
        bases: dict[TopicPartition, int] = {}
        unknown_end: list[TopicPartition] = []
        uncommitted: list[TopicPartition] = []
        for tp in assigned:
            end = self._consumer.highwater(tp)
            if end is None:
                unknown_end.append(tp)
            else:
                ends[tp] = end
                self._watch_stable(tp, end, self._consumer.last_stable_offset(tp))
            committed = tracker.committed(tp)
            if committed is None:
                uncommitted.append(tp)
            else:
                bases[tp] = committed
        ends |= await self._ask(self._consumer.end_offsets, unknown_end)
        bases |= await self._earliest_of(uncommitted)
        # A revocation in the awaits above already dropped its partitions' gauges: setting
        # them again would leave series nobody updates.
        still_assigned = self._consumer.assignment()
        for tp, end in ends.items():
            base = bases.get(tp)
            if base is not None and tp in still_assigned:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - base))

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drop the gauges of revoked partitions: another member reports them now."""
        for tp in tps:
            self._stable.pop(tp, None)
            self._earliest.pop(tp, None)
            for gauge in (metrics.CONSUMER_LAG, metrics.OPEN_TRANSACTION_OFFSETS):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))

    async def _earliest_of(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        now = self._clock.monotonic()
        missing = [tp for tp in tps if tp not in self._earliest]
        if now - self._earliest_asked >= EARLIEST_REFRESH_S:
            missing = tps
        if missing:
            self._earliest_asked = now
            self._earliest |= await self._ask(self._consumer.beginning_offsets, missing)
        return {tp: self._earliest[tp] for tp in tps if tp in self._earliest}

    async def _ask(
        self, query: _OffsetsQuery, tps: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        if not tps:
            return {}
        with contextlib.suppress(KafkaError, TimeoutError):
            return await asyncio.wait_for(query(tps), OFFSETS_TIMEOUT_S)
        return {}

    def _watch_stable(self, tp: TopicPartition, end: int, stable: int | None) -> None:
        if stable is None or stable < 0:  # read_uncommitted, or no fetch response yet
            return
        held = max(0, end - stable)
        metrics.OPEN_TRANSACTION_OFFSETS.labels(tp.topic, str(tp.partition)).set(held)
        now = self._clock.monotonic()
        seen = self._stable.get(tp)
        if held == 0:
            self._stable.pop(tp, None)
            return
        if seen is None or seen.offset != stable:
            self._stable[tp] = _Stable(stable, now)
            return
        if not seen.logged and now - seen.since >= STUCK_TRANSACTION_S:
            seen.logged = True
            log.warning(
                "an open transaction has held %s-%d at offset %d for %.0f s: %d offsets "
                "behind it are not read until its producer commits or aborts (or the "
                "broker's transaction timeout aborts it)",
                tp.topic,
                tp.partition,
                stable,
                now - seen.since,
                held,
                extra={"topic": tp.topic, "partition": tp.partition, "offset": stable},
            )
