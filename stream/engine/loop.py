"""The consumer loop: fetch micro-batches, hand them to the batch handler, commit what settled.

The loop only orchestrates. Per iteration:
1. apply pauses: retry partitions whose head record is not due yet; every partition while
   too many records are in flight (backpressure instead of unbounded buffering) or while
   consumption is halted;
2. fetch up to `batch_max` records, waiting at most `batch_wait`;
3. hold back retry records whose not-before time is in the future (pause that partition,
   seek back to the record, resume when due): the main topic never waits for them;
4. start the batch as a task (batches overlap, so a slow record does not stall the next);
5. commit, per partition, one past the end of the settled prefix (bounded in time; a
   failed commit is retried with later offsets on the next iteration). Offsets that hold
   no record (transaction markers, aborted transactions) are committed past once the
   client's position passed them and nothing before them is unsettled, so the committed
   offset reaches the log end.
A batch that raises `Halted` halts consumption: the other batches get `drain_timeout` to
settle, settled offsets are committed, every partition is paused and rewound to its first
unsettled record; the probe (topics, processor, MongoDB), every `halt_probe_interval`, ends
a halt it can.
Partitions assigned during a halt are paused as they are assigned, and a batch that meets
the halt under way is rewound too, so a rebalance never strands records behind a halt.
On revocation, batches holding revoked partitions get `drain_timeout` to settle; the rest
are cancelled (so they stop publishing copies the new owner will publish too), settled
offsets are committed and the partitions' state is dropped. On stop, fetching stops,
everything in flight gets `drain_timeout`, the rest is cancelled, offsets commit.
A change of the consumed topics waits for the next iteration, which settles or cancels the
batches in flight and commits before subscribing: subscribing drops the assignment at once,
and no commit succeeds until the next one.
Every await on Kafka has a deadline (`getmany`'s own timeout, else `asyncio.wait_for`), so
neither a stop nor a rebalance can hang on a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from stream.clock import Clock
from stream.config import Settings
from stream.engine.batch import Batch, BatchHandler
from stream.engine.failures import Failure
from stream.engine.halt import Halted
from stream.engine.lag import LagMonitor
from stream.engine.offsets import OffsetTracker
from stream.engine.ports import Consumer
from stream.engine.unreadable import fetch_past_unreadable
from stream.errors import SystemicError
from stream.observability import metrics
from stream.observability.logs import partitions_field

__all__ = ["COMMIT_TIMEOUT_S", "ConsumerLoop", "Halt"]

log = logging.getLogger(__name__)

LAG_REFRESH_S = 1.0
"""Lag gauges are for dashboards; once a second is plenty and keeps the loop cheap."""
COMMIT_TIMEOUT_S = 5.0
"""A commit answers in milliseconds when the coordinator is up; past this the broker is
unwell, and the next iteration retries with later offsets instead of waiting forever."""
FINAL_COMMIT_TIMEOUT_S = 2.0
"""The commit after a drain: part of what a stop may take beyond the drain bound (stated
in `stream.app`)."""
GATHER_SLICE_S = 0.005
"""While batches are in flight, look every 5 ms whether they are done: a record waits at
most this long once the sink is free (one getmany costs ~20 µs)."""
COMMITTED_TIMEOUT_S = 5.0
"""Reading the committed offsets of an assignment (all at once) is only for the lag gauge."""
PROBE_TIMEOUT_S = 30.0
"""A probe is one API call bounded by the client's own timeouts; this bounds a stuck one."""
COMMIT_FAILURE_LOG_EVERY_S = 30.0
"""While the coordinator is away every iteration fails to commit; say so twice a minute."""
POSITION_TIMEOUT_S = 1.0
"""Positions are local once a partition has been fetched from (only those are asked);
this bounds the call should one be reset meanwhile."""


@dataclass(frozen=True)
class Halt:
    """Why consumption is halted, for readiness, metrics and the probe schedule."""

    reason: str
    message: str
    setting: str
    probe: bool
    since: float


class ConsumerLoop(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Drives one group member; `run` returns whether the stop drained everything."""

    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        handler: BatchHandler,
        clock: Clock,
        probe: Callable[[], Awaitable[SystemicError | None]],
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._handler = handler
        self._clock = clock
        self._probe = probe
        self._tracker = OffsetTracker()
        self._lag = LagMonitor(consumer, clock)
        self._retry_topics = frozenset(settings.retry_topics)
        self._wanted_retry: tuple[str, ...] | None = None
        self._rebalancing = False
        self._reading_unreadable = False
        self._batches: dict[asyncio.Task[None], frozenset[TopicPartition]] = {}
        self._in_flight = 0
        self._not_before: dict[TopicPartition, float] = {}
        self._failure: BaseException | None = None
        self._halt_request: Halted | None = None
        self._lag_refreshed = -LAG_REFRESH_S
        self._commit_failure_logged = -COMMIT_FAILURE_LOG_EVERY_S
        self._next_probe = 0.0
        self.halt: Halt | None = None
        self.joined = False
        self.last_iteration = clock.monotonic()
        self.iterations = 0  # completed; a test waits on it to see that nothing happened

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def subscribe(self, retry_topics: Sequence[str] | None = None) -> None:
        """Consume the main topic and `retry_topics` (default: the configured ones); called
        again when the broker's topics change, which makes the member join again.

        Subscribing drops the assignment at once (aiokafka), after which no commit
        succeeds until the next assignment; so with partitions assigned the change waits
        for the next iteration, which settles and commits the work in flight first. During
        a rebalance it waits too: aiokafka loses a subscription changed while its
        assignment callback runs (no rejoin)."""
        self._wanted_retry = (
            self._settings.retry_topics if retry_topics is None else tuple(retry_topics)
        )
        if not self._rebalancing and not self._consumer.assignment():
            self._resubscribe()

    async def _settle_and_resubscribe(self) -> None:
        """Apply a pending subscription change: stop fetching, give the batches in flight
        drain_timeout (the rest are cancelled and read again), commit, then subscribe."""
        assigned = self._consumer.assignment()
        if assigned:
            self._consumer.pause(*assigned)
        abandoned = await self._settle_or_cancel(list(self._batches))
        if abandoned:
            log.warning(
                "subscription change: batches not settled in time were cancelled; their "
                "records are read again",
                extra={"partitions": partitions_field(abandoned)},
            )
        self._rewind(abandoned)
        await self._skip_gaps(assigned - abandoned)
        await self._commit()
        if not self._rebalancing:  # a rebalance may have begun in the awaits above
            self._resubscribe()

    def _resubscribe(self) -> None:
        retry, self._wanted_retry = self._wanted_retry, None
        if retry is not None:
            self._retry_topics = frozenset(retry)
            self._consumer.subscribe(topics=[self._settings.topic, *retry], listener=self)

    async def run(self, stop: asyncio.Event) -> bool:
        """Loop until `stop` is set or a batch fails with a bug (re-raised here); return
        True when the final drain settled and committed everything in flight.

        A stop interrupts the iteration under way (a fetch, a commit waiting for a
        coordinator, a probe), so the drain bound starts at once."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                iteration = asyncio.ensure_future(self._iterate(stop))
                await asyncio.wait({iteration, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not iteration.done():
                    iteration.cancel()
                    await asyncio.gather(iteration, return_exceptions=True)
                    break
                iteration.result()
                self.iterations += 1
        finally:
            stopping.cancel()
            drained = await self._drain()
        return drained

    async def _iterate(self, stop: asyncio.Event) -> None:
        self.last_iteration = self._clock.monotonic()
        if self._failure is not None:
            raise self._failure
        if self._wanted_retry is not None and not self._rebalancing:
            await self._settle_and_resubscribe()
        if self._halt_request is not None:
            await self._enter_halt(self._halt_request)
        if self.halt is not None:
            await self._probe_halt()
        self._apply_pauses()
        batch = await self._fetch(stop)
        if batch:
            self._start(batch)
        await self._commit()
        await self._observe()

    def _apply_pauses(self) -> None:
        now = self._clock.time()
        for tp, due in list(self._not_before.items()):
            if due <= now:
                del self._not_before[tp]
        assigned: set[TopicPartition] = self._consumer.assignment()
        wanted = {tp for tp in self._not_before if tp in assigned}
        if self.halt is not None or self._in_flight >= self._settings.max_in_flight:
            wanted = assigned
        paused: set[TopicPartition] = self._consumer.paused()
        if wanted - paused:
            self._consumer.pause(*(wanted - paused))
        if paused - wanted:
            self._consumer.resume(*(paused - wanted))

    async def _fetch(self, stop: asyncio.Event) -> Batch:
        """Gather up to batch_max records across partitions, waiting at most batch_wait.

        Adaptive mode (the default) is group commit: with nothing in flight a batch goes
        as soon as it has a record, so a quiet topic pays no gathering delay; while
        earlier batches are in flight it keeps gathering (the sink is busy anyway) until
        they are done, it is full or batch_wait has passed. Batches grow with the load
        and the write latency, and a backlog fills them to batch_max at once. A batch
        that settles ends an empty wait, so its commit does not wait for the next records.
        """
        # The event loop's clock, not the injected one: the consumer waits in real time, so
        # the gathering deadline is measured on the time its `getmany` timeouts spend.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.batch_wait_s
        adaptive = self._settings.batch_mode == "adaptive"
        room = self._settings.batch_max
        running = len(self._batches)
        batch = Batch()
        while room > 0 and not stop.is_set():
            remaining = max(0.0, deadline - loop.time())
            if adaptive and self._batches:
                remaining = min(remaining, GATHER_SLICE_S)
            elif adaptive and batch:
                remaining = 0.0
            wait_ms = int(remaining * 1000)
            try:
                fetched = await self._consumer.getmany(timeout_ms=wait_ms, max_records=room)
            except UnicodeDecodeError:  # a batch the client cannot read: see unreadable.py
                self._reading_unreadable = True
                try:
                    fetched = await fetch_past_unreadable(self._consumer, self._tracker, room)
                finally:
                    self._reading_unreadable = False
            assigned = self._consumer.assignment()
            for tp, records in fetched.items():
                if tp not in assigned:
                    continue  # revoked in the await: tracking it would bring its state back
                room -= len(records)
                if tp.topic in self._retry_topics:
                    records = self._due(tp, records)
                if records:
                    batch.add(tp, self._tracker.partition(tp), records)
            if wait_ms == 0 or loop.time() >= deadline or self._halt_request is not None:
                break
            if adaptive and not batch and len(self._batches) < running:
                break  # a batch settled: commit it now, not after the wait
        return batch

    def _due(
        self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Records of a retry partition up to the first one not due yet, which is held back."""
        now = self._clock.time()
        for i, record in enumerate(records):
            failure = Failure.from_headers(record.headers)
            if failure is None or failure.not_before is None:
                continue
            due = failure.not_before.timestamp()
            if due > now:
                self._not_before[tp] = due
                self._consumer.seek(tp, record.offset)
                self._consumer.pause(tp)
                return records[:i]
        return records

    def _start(self, batch: Batch) -> None:
        metrics.BATCH_CURRENT.set(len(batch))
        task = asyncio.create_task(self._handler.handle(batch))
        tps = frozenset(batch.partitions)
        self._batches[task] = tps
        self._in_flight += len(batch)
        size = len(batch)

        def finished(done: asyncio.Task[None]) -> None:
            del self._batches[done]
            self._in_flight -= size
            if done.cancelled():
                return
            error = done.exception()
            if isinstance(error, Halted):
                if self.halt is not None:
                    # Fetched from a partition assigned during the halt: read it again
                    # once the halt ends (entering a halt rewinds everything else).
                    self._rewind(tps)
                elif self._halt_request is None:
                    self._halt_request = error
            elif error is not None:
                self._failure = error

        task.add_done_callback(finished)

    async def _commit(
        self, tps: Iterable[TopicPartition] | None = None, timeout_s: float = COMMIT_TIMEOUT_S
    ) -> bool:
        """Commit the settled prefixes (of all partitions, or of `tps`); False if it failed.

        Only assigned partitions: aiokafka refuses a whole commit that names another."""
        assigned = self._consumer.assignment()
        offsets = {
            tp: offset for tp, offset in self._tracker.committable(tps).items() if tp in assigned
        }
        if not offsets:
            return True
        try:
            await asyncio.wait_for(self._consumer.commit(offsets), timeout_s)
        except (KafkaError, TimeoutError) as exc:
            now = self._clock.monotonic()
            if now - self._commit_failure_logged >= COMMIT_FAILURE_LOG_EVERY_S:
                self._commit_failure_logged = now
                log.warning(
                    "commit failed, will retry with later offsets: %s",
                    type(exc).__name__,
                    extra={"partitions": partitions_field(offsets)},
                )
            return False
        self._tracker.mark_committed(offsets)
        metrics.COMMITS.inc()
        metrics.LAST_COMMIT_TIME.set(self._clock.time())
        return True

    async def _observe(self) -> None:
        """Gauges; once a second also commit past offsets that hold no record."""
        metrics.IN_FLIGHT.set(self._in_flight)
        now = self._clock.monotonic()
        if now - self._lag_refreshed < LAG_REFRESH_S:
            return
        self._lag_refreshed = now
        metrics.PAUSED_PARTITIONS.set(len(self._consumer.paused()))
        await self._skip_gaps(self._consumer.assignment())
        await self._commit()
        # Read again: a rebalance may have landed in the awaits above, and the client
        # asserts on a partition no longer assigned.
        await self._lag.refresh(self._consumer.assignment(), self._tracker)

    async def _skip_gaps(self, tps: Iterable[TopicPartition]) -> None:
        """Let partitions with nothing unsettled commit up to the client's position, which
        passes transaction markers and aborted records without returning them.

        Not while past an unreadable batch: the records gathered there are not tracked
        yet, and the position is past them."""
        if self._reading_unreadable:
            return
        assigned = self._consumer.assignment()  # a revocation may come after it changed
        states = {tp: self._tracker.partition(tp) for tp in tps if tp in assigned}
        idle = [  # fetched from (so its position is known) with nothing unsettled
            tp for tp, state in states.items()
            if state.unsettled == 0 and self._consumer.highwater(tp) is not None
        ]
        if not idle:
            return
        try:
            positions = await asyncio.wait_for(
                asyncio.gather(
                    *(self._consumer.read_position(tp) for tp in idle), return_exceptions=True
                ),
                POSITION_TIMEOUT_S,
            )
        except TimeoutError:
            return
        for tp, position in zip(idle, positions, strict=True):
            if isinstance(position, int):
                states[tp].skip_to(position)

    async def _wait(
        self, tasks: list[asyncio.Task[None]], seconds: float
    ) -> set[asyncio.Task[None]]:
        """Wait for `tasks` at most `seconds` of the clock; return those still running."""
        pending: set[asyncio.Future[None]] = set(tasks)
        timer = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            while pending and not timer.done():
                _, pending = await asyncio.wait(
                    pending | {timer}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(timer)
        finally:
            timer.cancel()
        return {task for task in tasks if not task.done()}

    async def _settle_or_cancel(self, tasks: list[asyncio.Task[None]]) -> set[TopicPartition]:
        """Give `tasks` drain_timeout to finish, cancel the rest; return the partitions the
        cancelled ones held (their records are unsettled and must be read again)."""
        if not tasks:
            return set()
        pending = await self._wait(tasks, self._settings.drain_timeout_s)
        abandoned: set[TopicPartition] = set()
        for task in pending:
            abandoned |= self._batches.get(task, frozenset())
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return abandoned

    def _rewind(self, tps: Iterable[TopicPartition]) -> None:
        """Drop the unsettled work of `tps` and read it again from its first record."""
        assigned = self._consumer.assignment()
        for tp in tps:
            resume_at = self._tracker.restart(tp)
            if resume_at is not None and tp in assigned:
                self._consumer.seek(tp, resume_at)

    async def _drain(self) -> bool:
        """Stop fetching, let in-flight batches settle within the bound, commit."""
        assigned = self._consumer.assignment()
        if assigned:
            self._consumer.pause(*assigned)
        if self._batches:
            log.info(
                "draining: waiting for in-flight batches to settle",
                extra={
                    "batches": len(self._batches),
                    "records": self._in_flight,
                    "bound_s": self._settings.drain_timeout_s,
                },
            )
        abandoned = await self._settle_or_cancel(list(self._batches))
        if abandoned:
            log.warning(
                "drain timed out; unsettled records will be redelivered",
                extra={"partitions": partitions_field(abandoned)},
            )
        await self._skip_gaps(assigned)
        committed = await self._commit(timeout_s=FINAL_COMMIT_TIMEOUT_S)
        return committed and not abandoned

    async def _enter_halt(self, cause: Halted) -> None:
        """Stop taking work: settle what can settle, commit, pause and rewind everything."""
        assigned = self._consumer.assignment()
        if assigned:
            self._consumer.pause(*assigned)
        await self._settle_or_cancel(list(self._batches))
        await self._skip_gaps(assigned)
        await self._commit()
        self._rewind(assigned)
        now = self._clock.monotonic()
        self._halt_request = None  # batches that halted meanwhile said the same
        self.halt = Halt(cause.reason, str(cause), cause.setting, cause.probe, now)
        self._next_probe = now + self._settings.halt_probe_interval_s
        metrics.HALTED.labels(cause.reason).set(1)
        message = str(cause)
        if cause.setting and cause.setting not in message:
            message += f" (check {cause.setting})"
        resumes = "probing to resume by itself" if cause.probe else "restart to resume"
        log.error(
            "halted: %s; nothing is dead-lettered or committed past it; %s",
            message,
            resumes,
            extra={"reason": cause.reason, "setting": cause.setting},
        )

    async def _probe_halt(self) -> None:
        """While halted: wait, and every probe interval ask the processor once."""
        halt = self.halt
        now = self._clock.monotonic()
        if halt is None or not halt.probe or now < self._next_probe:
            return
        self._next_probe = now + self._settings.halt_probe_interval_s
        try:
            fault = await asyncio.wait_for(self._probe(), PROBE_TIMEOUT_S)
        except TimeoutError:
            return
        if fault is None:
            self.halt = None
            metrics.HALTED.labels(halt.reason).set(0)
            log.info(
                "resumed: the %s fault is gone after %.0f s",
                halt.reason,
                now - halt.since,
                extra={"reason": halt.reason},
            )

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Called by aiokafka before a rebalance: settle or cancel, commit, forget."""
        self._rebalancing = True
        revoked = set(revoked)
        touching = [task for task, tps in self._batches.items() if tps & revoked]
        abandoned = await self._settle_or_cancel(touching)
        if abandoned:
            log.warning(
                "revocation: batches not settled in time were cancelled; the new owner "
                "reads their records again",
                extra={"partitions": partitions_field(abandoned & revoked)},
            )
        self._rewind(abandoned - revoked)
        await self._skip_gaps(revoked - abandoned)
        await self._commit(revoked)
        self._tracker.forget(revoked)
        self._lag.forget(revoked)
        for tp in revoked:
            self._not_before.pop(tp, None)
        if revoked:
            log.info("partitions revoked", extra={"partitions": partitions_field(revoked)})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Called by aiokafka after a rebalance: while halted, pause the new partitions
        before anything is fetched from them (aiokafka starts them fetchable, and the loop
        applies its pauses only between fetches); remember committed offsets for lag."""
        if assigned and (self.halt is not None or self._halt_request is not None):
            self._consumer.pause(*assigned)
        tps = list(assigned)
        states = [self._tracker.partition(tp) for tp in tps]
        with contextlib.suppress(TimeoutError):
            answers = await asyncio.wait_for(
                asyncio.gather(
                    *(self._consumer.committed(tp) for tp in tps), return_exceptions=True
                ),
                COMMITTED_TIMEOUT_S,
            )
            for state, answer in zip(states, answers, strict=True):
                if answer is None or isinstance(answer, int):
                    state.committed = answer
        self.joined = True
        self._rebalancing = False
        log.info("partitions assigned", extra={"partitions": partitions_field(assigned)})
