"""The engine without servers: the loop and the batch over in-memory fakes and a manual clock.

Each test protects one promise of the at-least-once machinery (commit only settled work,
retry timing, dead-lettering, rebalances, drains, backpressure, halting) and asserts the
outcome: documents stored, offsets committed, records published.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from support import eventually, turns

from stream.config import Settings
from stream.devkit.fakes import (
    FakeConsumer,
    FakePublisher,
    FakeSink,
    ManualClock,
    ScriptedProcessor,
)
from stream.engine.batch import BatchHandler
from stream.engine.failures import (
    ATTEMPT,
    ERROR_CLASS,
    Failure,
    Origin,
    header,
)
from stream.engine.loop import FINAL_COMMIT_TIMEOUT_S, LAG_REFRESH_S, ConsumerLoop
from stream.errors import SystemicError

TOPIC = "sms"
MAIN = TopicPartition(TOPIC, 0)
RETRY_1 = TopicPartition(f"{TOPIC}.retry.1", 0)
RETRY_2 = TopicPartition(f"{TOPIC}.retry.2", 0)
DLQ = f"{TOPIC}.dlq"


def settings(**changes: Any) -> Settings:
    base = Settings(
        topic=TOPIC,
        retry_delays_s=(5.0, 30.0),
        batch_max=10,
        batch_wait_s=0.002,
        drain_timeout_s=2.0,
        max_in_flight=1000,
    )
    return base.replace(**changes)


def sms(n: int) -> bytes:
    return orjson.dumps(
        {"id": f"sms-{n}", "sender": "+254700000000", "body": f"hello {n}",
         "received_at": "2026-11-28T10:00:00Z"}
    )


@dataclass
class Engine:
    settings: Settings
    clock: ManualClock
    consumer: FakeConsumer
    sink: FakeSink
    publisher: FakePublisher
    processor: ScriptedProcessor
    loop: ConsumerLoop
    stop: asyncio.Event
    task: asyncio.Task[bool]

    def committed(self, tp: TopicPartition = MAIN) -> int | None:
        return self.consumer.committed_offsets.get(tp)

    def stored(self) -> set[str]:
        return set(self.sink.documents)

    def topic(self, name: str) -> list[Any]:
        return self.publisher.published.get(name, [])

    async def settled(self, what: str = "everything settled") -> None:
        """Every record fetched so far is settled and committed."""
        def done() -> bool:
            return self.loop.in_flight == 0 and all(
                self.committed(tp) == len(log) for tp, log in self.consumer.logs.items() if log
            )
        await eventually(done, what=what)


@asynccontextmanager
async def engine(
    config: Settings | None = None, processor: ScriptedProcessor | None = None,
    sink: FakeSink | None = None, consumer: FakeConsumer | None = None,
) -> AsyncIterator[Engine]:
    config = config or settings()
    clock = ManualClock()
    consumer = consumer or FakeConsumer()
    sink = sink or FakeSink()
    publisher = FakePublisher()
    processor = processor or ScriptedProcessor()
    handler = BatchHandler(config, processor, sink, publisher, clock)
    loop = ConsumerLoop(config, consumer, handler, clock, processor.probe)
    loop.subscribe()
    await consumer.assign({MAIN, RETRY_1, RETRY_2})
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    state = Engine(config, clock, consumer, sink, publisher, processor, loop, stop, task)
    try:
        yield state
    finally:
        stop.set()
        if not task.done():
            for _ in range(100):
                clock.advance(config.drain_timeout_s)
                await asyncio.sleep(0.005)
                if task.done():
                    break
        await asyncio.wait_for(asyncio.shield(task), 5)


async def test_commit_stops_before_a_slow_record_and_passes_it_once_settled() -> None:
    release = asyncio.Event()
    processor = ScriptedProcessor(held={"sms-3": release})
    async with engine(config=settings(batch_max=2), processor=processor) as e:
        for n in range(8):
            e.consumer.append(MAIN, sms(n))
        later = {f"sms-{n}" for n in range(8)} - {"sms-2", "sms-3"}
        await eventually(lambda: e.stored() == later, what="the later batches stored")
        await eventually(lambda: e.committed() == 2, what="commit up to the held batch")
        await turns(e.loop)
        assert e.committed() == 2
        release.set()
        await e.settled()
        assert e.stored() == {f"sms-{n}" for n in range(8)}


async def test_retry_partition_waits_exactly_until_not_before() -> None:
    async with engine() as e:
        now = datetime.fromtimestamp(e.clock.time(), UTC)
        failure = Failure(
            origin=Origin(TOPIC, 0, 41), attempt=1, error_class="http_503",
            error_message="x", first_failed_at=now, not_before=now + timedelta(seconds=5),
        )
        e.consumer.append(RETRY_1, sms(1), headers=failure.to_headers())
        await eventually(lambda: RETRY_1 in e.consumer.paused(), what="retry partition paused")
        assert e.consumer.position(RETRY_1) == 0
        e.clock.advance(4.99)
        await turns(e.loop)
        assert e.stored() == set()
        assert RETRY_1 in e.consumer.paused()
        e.clock.advance(0.02)
        await eventually(lambda: e.stored() == {"sms-1"}, what="stored once due")
        document = e.sink.documents["sms-1"]
        assert document["attempts"] == 2
        assert document["source"] == {"topic": TOPIC, "partition": 0, "offset": 41}
        await e.settled()


async def test_main_topic_never_waits_for_a_retry_partition() -> None:
    async with engine() as e:
        now = datetime.fromtimestamp(e.clock.time(), UTC)
        failure = Failure(Origin(TOPIC, 0, 0), 1, "http_503", "x", now,
                          not_before=now + timedelta(seconds=60))
        e.consumer.append(RETRY_1, sms(100), headers=failure.to_headers())
        for n in range(5):
            e.consumer.append(MAIN, sms(n))
        await eventually(lambda: e.committed(MAIN) == 5, what="main topic committed")
        assert "sms-100" not in e.stored()


async def test_transient_failure_goes_to_the_next_retry_level_with_its_delay() -> None:
    processor = ScriptedProcessor(transient={"sms-1": 9})
    async with engine(processor=processor) as e:
        e.consumer.append(MAIN, sms(1), headers=[("trace-id", b"abc")])
        await eventually(lambda: e.topic(RETRY_1.topic), what="retry copy")
        (copy,) = e.topic(RETRY_1.topic)
        failure = Failure.from_headers(copy.headers)
        assert failure is not None
        assert failure.not_before == datetime.fromtimestamp(e.clock.time() + 5.0, UTC)
        assert (failure.attempt, failure.origin.offset) == (1, 0)
        assert ("trace-id", b"abc") in copy.headers, "the producer's headers travel along"
        await eventually(lambda: e.committed(MAIN) == 1, what="commit after the retry copy")


async def test_retry_after_longer_than_a_delay_skips_to_the_level_that_covers_it() -> None:
    processor = ScriptedProcessor(transient={"sms-1": 9}, retry_after={"sms-1": 20.0})
    async with engine(processor=processor) as e:
        e.consumer.append(MAIN, sms(1))
        await eventually(lambda: e.topic(RETRY_2.topic), what="copy on retry level 2")
        assert e.topic(RETRY_1.topic) == []
        failure = Failure.from_headers(e.topic(RETRY_2.topic)[0].headers)
        assert failure is not None
        assert failure.not_before == datetime.fromtimestamp(e.clock.time() + 30.0, UTC)


async def test_malformed_record_is_dead_lettered_with_its_reason_and_bytes() -> None:
    async with engine() as e:
        e.consumer.append(MAIN, b"{not json", key=b"k")
        e.consumer.append(MAIN, sms(2))
        await e.settled()
        (dead,) = e.topic(DLQ)
        assert (dead.key, dead.value) == (b"k", b"{not json")
        assert header(dead.headers, ERROR_CLASS) == "invalid_json"
        assert e.stored() == {"sms-2"}


async def test_document_the_server_refuses_is_dead_lettered_as_unstorable() -> None:
    async with engine(sink=FakeSink(refuse={"sms-2"})) as e:
        for n in range(4):
            e.consumer.append(MAIN, sms(n))
        await e.settled()
        assert e.stored() == {"sms-0", "sms-1", "sms-3"}
        (dead,) = e.topic(DLQ)
        assert header(dead.headers, ERROR_CLASS) == "unstorable"
        assert dead.value == sms(2)


async def test_failed_commit_is_retried_with_later_offsets() -> None:
    async with engine() as e:
        e.consumer.fail_commits(10**9)
        e.consumer.append(MAIN, sms(0))
        await eventually(lambda: e.stored() == {"sms-0"}, what="stored")
        e.consumer.append(MAIN, sms(1))
        await eventually(lambda: e.stored() == {"sms-0", "sms-1"}, what="both stored")
        assert e.committed() is None
        e.consumer.fail_commits(0)
        await e.settled()
        assert e.consumer.commit_calls == [{MAIN: 2}]


async def test_a_hung_commit_does_not_hang_the_loop() -> None:
    async with engine() as e:
        e.consumer.commit_hang = True
        e.consumer.append(MAIN, sms(0))
        await eventually(lambda: e.stored() == {"sms-0"}, what="stored")
        before = e.loop.last_iteration
        e.consumer.commit_hang = False
        await eventually(lambda: e.committed() == 1, within=10, what="commit after the hang")
        assert e.loop.last_iteration >= before


async def test_stop_interrupts_a_commit_that_hangs_on_the_coordinator() -> None:
    async with engine() as e:
        e.consumer.commit_hang = True
        e.consumer.append(MAIN, sms(0))
        await eventually(lambda: e.stored() == {"sms-0"}, what="stored")
        e.stop.set()
        assert await asyncio.wait_for(e.task, 2 * FINAL_COMMIT_TIMEOUT_S + 1) is False


async def test_revocation_cancels_a_batch_that_does_not_settle_in_time() -> None:
    release = asyncio.Event()
    processor = ScriptedProcessor(held={"sms-1": release}, transient={"sms-1": 1})
    async with engine(processor=processor) as e:
        e.consumer.append(MAIN, sms(0))
        await eventually(lambda: e.committed() == 1, what="first record committed")
        e.consumer.append(MAIN, sms(1))
        await eventually(lambda: processor.attempts.get("sms-1") == 1, what="held call")
        rebalance = asyncio.create_task(e.consumer.assign({MAIN, RETRY_1, RETRY_2}))
        await eventually(lambda: e.clock.sleepers, what="the revocation waiting for the batch")
        e.clock.advance(e.settings.drain_timeout_s)
        await asyncio.wait_for(rebalance, 5)
        await eventually(lambda: processor.attempts.get("sms-1") == 2, what="read again")
        assert e.committed() == 1, "nothing committed past the unsettled record"
        release.set()
        await e.settled("the new assignment reprocesses it")
        assert e.topic(RETRY_1.topic) == [], "the cancelled batch published nothing"
        assert e.stored() == {"sms-0", "sms-1"}


async def test_kafka_outage_while_publishing_holds_the_batch_unsettled() -> None:
    processor = ScriptedProcessor(permanent={"sms-0"})
    async with engine(processor=processor) as e:
        e.publisher.open.clear()
        e.consumer.append(MAIN, sms(0))
        e.consumer.append(MAIN, sms(1))
        await eventually(lambda: e.loop.in_flight == 2 and processor.attempts, what="in flight")
        await turns(e.loop)
        assert e.committed() is None
        e.publisher.open.set()
        await e.settled()
        assert len(e.topic(DLQ)) == 1
        assert e.stored() == {"sms-1"}


async def test_too_much_in_flight_pauses_fetching_until_it_settles() -> None:
    async with engine(config=settings(max_in_flight=10, batch_max=10)) as e:
        e.sink.open.clear()
        for n in range(30):
            e.consumer.append(MAIN, sms(n))
        await eventually(lambda: MAIN in e.consumer.paused(), what="paused by backpressure")
        await turns(e.loop)
        assert e.consumer.position(MAIN) == 10
        e.sink.open.set()
        await e.settled()
        assert len(e.stored()) == 30
        # The loop commits in the iteration that saw the last batch settle and resumes
        # fetching at the start of the next one, so "committed" can come first.
        await eventually(lambda: MAIN not in e.consumer.paused(), what="resumed")


async def test_stop_drains_and_commits() -> None:
    async with engine() as e:
        for n in range(5):
            e.consumer.append(MAIN, sms(n))
        await eventually(lambda: len(e.stored()) == 5, what="stored")
        e.stop.set()
        assert await asyncio.wait_for(e.task, 5) is True
        assert e.committed() == 5


async def test_stop_gives_up_after_the_drain_bound_and_says_so() -> None:
    release = asyncio.Event()
    processor = ScriptedProcessor(held={"sms-1": release})
    async with engine(processor=processor) as e:
        e.consumer.append(MAIN, sms(0))
        e.consumer.append(MAIN, sms(1))
        await eventually(lambda: processor.attempts.get("sms-1"), what="held")
        e.stop.set()
        await eventually(lambda: e.clock.sleepers, what="the drain waiting for the held batch")
        assert not e.task.done()
        e.clock.advance(e.settings.drain_timeout_s)
        assert await asyncio.wait_for(e.task, 5) is False
        assert e.committed() in (None, 0)


async def test_systemic_fault_halts_without_dead_lettering_then_resumes() -> None:
    fault = SystemicError("HTTP 401", reason="http_401", setting="STREAM_API_TOKEN")
    processor = ScriptedProcessor(systemic=fault)
    async with engine(processor=processor) as e:
        for n in range(20):
            e.consumer.append(MAIN, sms(n))
        await eventually(lambda: e.loop.halt, what="halted")
        assert e.loop.halt is not None
        assert (e.loop.halt.reason, e.loop.halt.setting) == ("http_401", "STREAM_API_TOKEN")
        assert e.topic(DLQ) == []
        assert e.topic(RETRY_1.topic) == []
        assert e.committed() is None
        await eventually(lambda: e.consumer.paused() >= {MAIN}, what="everything paused")
        e.clock.advance(e.settings.halt_probe_interval_s)
        await eventually(lambda: processor.probes == 1, what="one probe")
        assert e.loop.halt is not None, "still faulted: still halted"
        processor.systemic = None
        e.clock.advance(e.settings.halt_probe_interval_s)
        await e.settled("resumed and settled")
        assert e.loop.halt is None
        assert e.stored() == {f"sms-{n}" for n in range(20)}
        assert e.topic(DLQ) == []


async def test_dead_letter_breaker_halts_when_everything_fails() -> None:
    config = settings(dlq_halt_min=20, dlq_halt_ratio=0.5, batch_max=10)
    async with engine(config=config) as e:
        for n in range(100):
            e.consumer.append(MAIN, b"garbage %d" % n)
        await eventually(lambda: e.loop.halt, what="halted by the breaker")
        assert e.loop.halt is not None
        assert e.loop.halt.reason == "dlq_rate"
        dead = len(e.topic(DLQ))
        assert 10 <= dead < 20, dead
        assert e.committed() == dead, "committed exactly what was dead-lettered"
        e.clock.advance(e.settings.halt_probe_interval_s * 3)
        await turns(e.loop)
        assert len(e.topic(DLQ)) == dead, "no probe resumes a breaker halt"


async def test_dead_letter_breaker_ignores_a_trickle_of_bad_records() -> None:
    config = settings(dlq_halt_min=5, dlq_halt_ratio=0.5)
    async with engine(config=config) as e:
        for n in range(200):
            e.consumer.append(MAIN, b"garbage" if n % 20 == 0 else sms(n))
        await e.settled()
        assert e.loop.halt is None
        assert len(e.topic(DLQ)) == 10
        assert {header(d.headers, ATTEMPT) for d in e.topic(DLQ)} == {"1"}


@pytest.mark.parametrize("records", [0, 3])
async def test_revocation_commits_what_settled(records: int) -> None:
    async with engine() as e:
        for n in range(records):
            e.consumer.append(MAIN, sms(n))
        await e.settled()
        await e.consumer.assign({RETRY_1})
        assert e.committed() == (records or None)
        assert MAIN not in e.consumer.assignment()


async def test_adaptive_batch_goes_at_once_on_a_quiet_topic() -> None:
    async with engine(config=settings(batch_wait_s=30.0)) as e:
        e.consumer.append(MAIN, sms(0))
        await eventually(lambda: e.stored() == {"sms-0"}, within=5, what="stored without waiting")


async def test_adaptive_batch_gathers_while_a_write_is_under_way() -> None:
    async with engine(config=settings(batch_wait_s=30.0, batch_max=100)) as e:
        e.sink.open.clear()
        e.consumer.append(MAIN, sms(0))
        await eventually(lambda: e.loop.in_flight == 1, what="the first batch in flight")
        for n in range(1, 10):
            e.consumer.append(MAIN, sms(n))
        await eventually(lambda: e.consumer.position(MAIN) == 10, what="the rest fetched")
        fetches = e.consumer.fetches + 2
        await eventually(lambda: e.consumer.fetches >= fetches, what="the fetch still gathering")
        assert e.sink.writes == 0
        e.sink.open.set()
        await e.settled()
        assert e.sink.writes == 2, "the nine gathered into one batch"


async def test_fixed_batch_waits_to_fill_up() -> None:
    async with engine(config=settings(batch_mode="fixed", batch_wait_s=0.3, batch_max=5)) as e:
        e.consumer.append(MAIN, sms(0))
        await asyncio.sleep(0.1)
        assert e.stored() == set()
        await eventually(lambda: e.stored() == {"sms-0"}, what="stored after the wait")


async def _halted_with_records(e: Engine, count: int) -> None:
    for n in range(count):
        e.consumer.append(MAIN, sms(n))
    await eventually(lambda: e.loop.halt, what="halted")
    await eventually(lambda: e.consumer.paused() >= e.consumer.assignment(), what="all paused")


async def test_partitions_assigned_while_halted_are_paused_before_any_fetch() -> None:
    fault = SystemicError("HTTP 401", reason="http_401", setting="STREAM_API_TOKEN")
    processor = ScriptedProcessor(systemic=fault)
    # A long batch wait keeps the loop inside its fetch, where a rebalance lands in aiokafka.
    async with engine(config=settings(batch_wait_s=0.5), processor=processor) as e:
        await _halted_with_records(e, 20)
        attempts = dict(processor.attempts)
        await e.consumer.assign({MAIN, RETRY_1, RETRY_2})
        assert e.consumer.paused() == e.consumer.assignment()
        await turns(e.loop)
        assert processor.attempts == attempts, "nothing fetched from a halted assignment"
        processor.systemic = None
        e.clock.advance(e.settings.halt_probe_interval_s)
        await e.settled("resumed and settled")
        assert e.stored() == {f"sms-{n}" for n in range(20)}
        assert e.topic(DLQ) == []


async def test_a_batch_fetched_during_a_halt_is_rewound() -> None:
    """A batch that meets a halt already under way (fetched from a partition paused too
    late) is read again once the halt ends, not left unsettled behind the position."""
    fault = SystemicError("HTTP 401", reason="http_401", setting="STREAM_API_TOKEN")
    processor = ScriptedProcessor(systemic=fault)
    async with engine(config=settings(batch_wait_s=0.5), processor=processor) as e:
        await _halted_with_records(e, 20)
        attempts = sum(processor.attempts.values())
        e.consumer.resume(MAIN)  # as if fetched before the pause took effect
        await eventually(lambda: sum(processor.attempts.values()) > attempts,
                         what="a batch fetched while halted")
        await eventually(lambda: e.loop.in_flight == 0, what="the batch failed")
        assert e.consumer.position(MAIN) == 0, "rewound to its first unsettled record"
        processor.systemic = None
        e.clock.advance(e.settings.halt_probe_interval_s)
        await e.settled("resumed and settled")
        assert e.stored() == {f"sms-{n}" for n in range(20)}


async def test_sink_refusals_count_for_the_dead_letter_breaker() -> None:
    """A sink refusing most documents (e.g. a unique index clashing) is a mass failure
    like any other: the breaker halts instead of dead-lettering the stream."""
    config = settings(dlq_halt_min=20, dlq_halt_ratio=0.5, batch_max=10)
    refused = {f"sms-{n}" for n in range(100) if n % 10}
    async with engine(config=config, sink=FakeSink(refuse=refused)) as e:
        for n in range(100):
            e.consumer.append(MAIN, sms(n))
        await eventually(lambda: e.loop.halt, what="halted by the breaker")
        assert e.loop.halt is not None
        assert e.loop.halt.reason == "dlq_rate"
        dead = {header(d.headers, ERROR_CLASS) for d in e.topic(DLQ)}
        assert dead <= {"unstorable"}
        assert len(e.topic(DLQ)) < 20


async def test_a_sink_refusing_every_write_halts_without_dead_lettering() -> None:
    async with engine() as e:
        e.sink.refusing = SystemicError("every write refused", reason="mongo_refused")
        for n in range(5):
            e.consumer.append(MAIN, sms(n))
        await eventually(lambda: e.loop.halt, what="halted")
        assert e.loop.halt is not None
        assert (e.loop.halt.reason, e.loop.halt.probe) == ("mongo_refused", True)
        assert e.topic(DLQ) == []
        assert e.committed() is None
        assert e.consumer.position(MAIN) == 0, "rewound"


async def test_a_subscription_changed_during_a_rebalance_is_applied_after_it() -> None:
    """aiokafka loses a subscription changed while its assignment callback runs (the member
    never joins again): the loop holds the change until the rebalance is over."""
    more = [RETRY_1.topic, RETRY_2.topic, f"{TOPIC}.retry.3"]
    async with engine() as e:
        await e.loop.on_partitions_revoked({MAIN, RETRY_1, RETRY_2})
        e.loop.subscribe(more)
        await turns(e.loop)
        assert e.consumer.topics == [TOPIC, RETRY_1.topic, RETRY_2.topic]
        await e.loop.on_partitions_assigned({MAIN, RETRY_1, RETRY_2})
        await eventually(lambda: e.consumer.topics == [TOPIC, *more], what="the new subscription")


class _RebalancedWhileAsked(FakeConsumer):
    """A rebalance lands while the loop awaits the client (here: a position it asks for on
    its way to the gauges), as it can with a real group."""

    def __init__(self) -> None:
        super().__init__()
        self.rebalance_to: set[TopicPartition] | None = None

    async def read_position(self, partition: TopicPartition) -> int:
        if self.rebalance_to is not None:
            new, self.rebalance_to = self.rebalance_to, None
            await self.assign(new)
        return await super().read_position(partition)


async def test_a_rebalance_on_the_way_to_the_lag_gauges_does_not_crash_the_loop() -> None:
    """The gauges ask the client only about partitions assigned when they ask (aiokafka
    asserts on any other), not about the assignment seen before an await."""
    consumer = _RebalancedWhileAsked()
    async with engine(consumer=consumer) as e:
        for n in range(5):
            e.consumer.append(MAIN, sms(n))
        await e.settled("first records settled")
        consumer.rebalance_to = {MAIN}
        e.clock.advance(LAG_REFRESH_S)
        await eventually(lambda: consumer.rebalance_to is None, what="a rebalance while asked")
        e.consumer.append(MAIN, sms(5))
        e.clock.advance(LAG_REFRESH_S)
        await e.settled("settled after the rebalance")
        assert not e.task.done(), "the loop is still running"
        assert e.stored() == {f"sms-{n}" for n in range(6)}


async def test_a_subscription_change_commits_settled_work_before_the_assignment_goes() -> None:
    """Subscribing drops the assignment at once (aiokafka), so no commit succeeds until
    the next one: work in flight when the topics change is settled and committed first,
    and a stop in the window before the rebalance still drains cleanly."""
    release = asyncio.Event()
    processor = ScriptedProcessor(held={"sms-0": release})
    more = [RETRY_1.topic, RETRY_2.topic, f"{TOPIC}.retry.3"]
    async with engine(processor=processor) as e:
        e.consumer.append(MAIN, sms(0))
        await eventually(lambda: processor.attempts.get("sms-0") == 1, what="held call")
        e.loop.subscribe(more)
        release.set()
        await eventually(lambda: e.consumer.topics == [TOPIC, *more], what="resubscribed")
        assert e.committed() == 1, "the settled record committed before the subscription"
        e.stop.set()
        assert await asyncio.wait_for(e.task, 5) is True, "the stop drained everything"


async def test_a_revoked_partition_left_in_the_tracker_does_not_block_commits() -> None:
    """aiokafka refuses a whole commit that names a partition not assigned: commits name
    only assigned partitions, so one stale entry cannot stop every later commit."""
    stale = TopicPartition(f"{TOPIC}.retry.3", 0)
    async with engine() as e:
        state = e.loop._tracker.partition(stale)  # as a late path re-creating revoked state
        state.track([0])
        state.settle([0])
        for n in range(3):
            e.consumer.append(MAIN, sms(n))
        await e.settled("the assigned partition commits")
        assert stale not in e.consumer.committed_offsets


class _CommittedAnswersOnceAllAsked(FakeConsumer):
    """A coordinator that answers committed-offset requests only once every partition of
    the assignment has been asked: a member that asks one at a time waits out each."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0
        self.answered = 0
        self._all_asked = asyncio.Event()

    async def committed(self, partition: TopicPartition) -> int | None:
        self.asked += 1
        if self.asked >= len(self.assignment()):
            self._all_asked.set()
        await self._all_asked.wait()
        self.answered += 1
        return await super().committed(partition)


async def test_committed_offsets_of_an_assignment_are_asked_together() -> None:
    """The rebalance callback asks for every partition's committed offset at once, under
    one bound, so a slow coordinator holds the rebalance for one bound, not one each."""
    consumer = _CommittedAnswersOnceAllAsked()
    async with engine(consumer=consumer):
        assert consumer.answered == 3
