"""The consumer loop: fetch micro-batches, hand them to the pipeline, commit what settled.

The loop only orchestrates. Per iteration:
1. apply pauses: retry partitions whose head record is not due yet, and every partition
   while too many records are in flight (backpressure instead of unbounded buffering);
2. fetch up to `batch_max` records, waiting at most `batch_wait`;
3. hold back retry records whose not-before time is in the future (pause that partition,
   seek back to the record, resume when due) - the main topic never waits for them;
4. start the batch as a task (batches overlap, so a slow record does not stall the next);
5. commit, per partition, the offset below which every record is settled.
On revocation, in-flight batches of the revoked partitions get `drain_timeout` to settle,
settled offsets are committed, and the partitions' state is dropped. On stop, fetching
stops, everything in flight gets `drain_timeout`, the rest is cancelled, offsets commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from stream.config import Settings
from stream.engine.batch import BatchHandler, Fetched
from stream.engine.failures import NOT_BEFORE, header
from stream.engine.offsets import OffsetTracker
from stream.observability import metrics

__all__ = ["ConsumerLoop"]

log = logging.getLogger(__name__)

LAG_REFRESH_S = 1.0
"""Lag gauges are for dashboards; once a second is plenty and keeps the loop cheap."""


class ConsumerLoop(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Drives one group member; `run` returns after a drained, committed stop."""

    def __init__(
        self, settings: Settings, consumer: AIOKafkaConsumer, handler: BatchHandler
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._handler = handler
        self._tracker = OffsetTracker()
        self._retry_topics = frozenset(settings.retry_topics)
        self._batches: dict[asyncio.Task[None], frozenset[TopicPartition]] = {}
        self._in_flight = 0
        self._not_before: dict[TopicPartition, float] = {}
        self._failure: BaseException | None = None
        self._lag_refreshed = 0.0
        self.joined = False
        self.last_iteration = time.monotonic()

    def subscribe(self) -> None:
        topics = [self._settings.topic, *self._settings.retry_topics]
        self._consumer.subscribe(topics=topics, listener=self)

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until `stop` is set or a batch fails with a bug (re-raised here)."""
        try:
            while not stop.is_set():
                self.last_iteration = time.monotonic()
                if self._failure is not None:
                    raise self._failure
                self._apply_pauses()
                batch = await self._fetch(stop)
                if batch:
                    self._start(batch)
                await self._commit()
                self._observe()
        finally:
            await self._drain()

    def _apply_pauses(self) -> None:
        now = time.time()
        for tp, due in list(self._not_before.items()):
            if due <= now:
                del self._not_before[tp]
        assigned: set[TopicPartition] = self._consumer.assignment()
        wanted = {tp for tp in self._not_before if tp in assigned}
        if self._in_flight >= self._settings.max_in_flight:
            wanted = assigned
        paused: set[TopicPartition] = self._consumer.paused()
        if wanted - paused:
            self._consumer.pause(*(wanted - paused))
        if paused - wanted:
            self._consumer.resume(*(paused - wanted))

    async def _fetch(self, stop: asyncio.Event) -> list[Fetched]:
        """Gather up to batch_max records across partitions, waiting at most batch_wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.batch_wait_s
        room = self._settings.batch_max
        batch: list[Fetched] = []
        while room > 0 and not stop.is_set():
            wait_ms = max(0, int((deadline - loop.time()) * 1000))
            fetched: dict[TopicPartition, list[ConsumerRecord]] = await self._consumer.getmany(
                timeout_ms=wait_ms, max_records=room
            )
            for tp, records in fetched.items():
                room -= len(records)
                if tp.topic in self._retry_topics:
                    records = self._due(tp, records)
                if records:
                    offsets = self._tracker.partition(tp)
                    offsets.track(record.offset for record in records)
                    batch.extend(Fetched(record, offsets) for record in records)
            if wait_ms == 0:
                break
        return batch

    def _due(self, tp: TopicPartition, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        """Records of a retry partition up to the first one not due yet, which is held back."""
        now = time.time()
        for i, record in enumerate(records):
            not_before = header(record.headers, NOT_BEFORE)
            if not_before is None:
                continue
            try:
                due = datetime.fromisoformat(not_before).timestamp()
            except ValueError:
                continue
            if due > now:
                self._not_before[tp] = due
                self._consumer.seek(tp, record.offset)
                self._consumer.pause(tp)
                return records[:i]
        return records

    def _start(self, batch: list[Fetched]) -> None:
        task = asyncio.create_task(self._handler.handle(batch))
        self._batches[task] = frozenset(
            TopicPartition(item.record.topic, item.record.partition) for item in batch
        )
        self._in_flight += len(batch)
        size = len(batch)

        def finished(done: asyncio.Task[None]) -> None:
            del self._batches[done]
            self._in_flight -= size
            if not done.cancelled() and done.exception() is not None:
                self._failure = done.exception()

        task.add_done_callback(finished)

    async def _commit(self, tps: Iterable[TopicPartition] | None = None) -> None:
        offsets = self._tracker.committable(tps)
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("commit failed, will retry with later offsets: %r", exc)
            return
        self._tracker.mark_committed(offsets)
        metrics.COMMITS.inc()
        metrics.LAST_COMMIT_TIME.set(time.time())

    def _observe(self) -> None:
        metrics.IN_FLIGHT.set(self._in_flight)
        now = time.monotonic()
        if now - self._lag_refreshed < LAG_REFRESH_S:
            return
        self._lag_refreshed = now
        metrics.PAUSED_PARTITIONS.set(len(self._consumer.paused()))
        for tp in self._consumer.assignment():
            end, committed = self._consumer.highwater(tp), self._tracker.committed(tp)
            if end is not None and committed is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(end - committed)

    async def _wait_for(self, tasks: list[asyncio.Task[None]]) -> int:
        """Wait up to drain_timeout for `tasks`; return how many are still running."""
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=self._settings.drain_timeout_s)
        return len(pending)

    async def _drain(self) -> None:
        """Stop fetching, let in-flight batches settle within the bound, commit."""
        assigned = self._consumer.assignment()
        if assigned:
            self._consumer.pause(*assigned)
        abandoned = await self._wait_for(list(self._batches))
        for task in list(self._batches):
            task.cancel()
        await asyncio.gather(*self._batches, return_exceptions=True)
        if abandoned:
            log.warning("drain timed out; %d batches left uncommitted for redelivery", abandoned)
        await self._commit()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Called by aiokafka before a rebalance: settle or abandon, commit, forget."""
        revoked = set(revoked)
        touching = [task for task, tps in self._batches.items() if tps & revoked]
        abandoned = await self._wait_for(touching)
        if abandoned:
            log.warning(
                "revocation: %d batches not settled in time; their records will be "
                "redelivered to the new owner",
                abandoned,
            )
        await self._commit(revoked)
        self._tracker.forget(revoked)
        for tp in revoked:
            self._not_before.pop(tp, None)
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
        log.info("partitions revoked: %s", sorted(str(tp) for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Called by aiokafka after a rebalance; remember committed offsets for lag."""
        for tp in assigned:
            self._tracker.partition(tp).committed = await self._consumer.committed(tp)
        self.joined = True
        log.info("partitions assigned: %s", sorted(str(tp) for tp in assigned))
