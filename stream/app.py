"""`stream run`: one member of the consumer group, from start-up to a drained exit.

Resources open in one AsyncExitStack and close in reverse order, so on SIGTERM/SIGINT the
loop drains and commits first, then the consumer leaves the group, then the producer
flushes, then MongoDB and the HTTP client close.

A stop takes at most the drain bound plus 12 s when Kafka does not answer: the final
commit's 2 s, the status tombstone's and its producer's 0.5 s each, the HTTP server's 5 s
grace for answers in progress and 1 s to close those it then cuts (a client that stopped
reading), and `SHUTDOWN_STEP_TIMEOUT_S` each for leaving the group and
flushing the producer. Closing MongoDB, the HTTP client and the admin is local. With Kafka
answering, and no slow scrape in progress, it takes milliseconds beyond the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from stream.adapters.kafka import new_consumer, new_producer
from stream.adapters.kafka_security import start as start_client
from stream.adapters.mongo import MongoSink
from stream.adapters.publisher import Router
from stream.adapters.status import MemberView, StatusReporter, member_key
from stream.adapters.topics import TopicReconciler
from stream.clock import Clock, SystemClock
from stream.config import Settings, help_text
from stream.engine.batch import BatchHandler
from stream.engine.loop import ConsumerLoop, Halt
from stream.engine.ports import Processor
from stream.errors import ConfigError, InvalidSettings, PortInUse, StreamError, SystemicError
from stream.observability import logs, metrics
from stream.observability.health import Probes, routes
from stream.observability.httpserver import HttpServer
from stream.processors.builtin import BuiltinProcessor
from stream.processors.http import HttpProcessor
from stream.processors.limiter import RATE_SOURCES, AdaptiveLimiter

__all__ = ["build_processor", "main", "serve"]

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 1.0
MONGO_PING_EVERY = 5
"""Readiness pings MongoDB every 5 s: often enough for a probe, rare enough to be free."""


def build_processor(
    settings: Settings, clock: Clock | None = None
) -> BuiltinProcessor | HttpProcessor:
    """The processor `settings.processor` names, on `clock`; the caller closes it."""
    if settings.processor == "http":
        return HttpProcessor(settings, clock=clock)
    return BuiltinProcessor()


async def _watch(limiter: AdaptiveLimiter | None, sink: MongoSink, clock: Clock) -> None:
    """Publish limiter gauges each second and refresh MongoDB reachability."""
    tick = drops_seen = 0
    while True:
        if limiter is not None:
            state = limiter.state
            metrics.LIMITER_DROPS.inc(state.drops - drops_seen)
            drops_seen = state.drops
            metrics.LIMITER_LIMIT.set(state.limit)
            metrics.LIMITER_IN_FLIGHT.set(state.in_flight)
            metrics.LIMITER_RATE.set(state.rate)
            paused = state.paused_until is not None and state.paused_until > clock.monotonic()
            metrics.LIMITER_PAUSED.set(1 if paused else 0)
            metrics.LIMITER_ESTIMATED_RATE.set(state.estimated_rate or 0.0)
            metrics.LIMITER_PACED_RATE.set(state.paced_rate or 0.0)
            for source in RATE_SOURCES:
                metrics.LIMITER_RATE_SOURCE.labels(source).set(1 if source == state.source else 0)
        if tick % MONGO_PING_EVERY == 0:
            await sink.ping()
        tick += 1
        await clock.sleep(WATCH_INTERVAL_S)


def _probe(
    processor: Processor, sink: MongoSink, topics: TopicReconciler
) -> Callable[[], Awaitable[SystemicError | None]]:
    """The halt probe: a halt ends only when the topics are whole again and neither the
    upstream nor MongoDB is at fault (any may have caused it, and resuming into another's
    fault halts again). The three are asked at once: the engine bounds the whole probe by
    what one check may take, so asked in turn a slow one would leave the next unasked. The
    fault reported is the first in the order topics, upstream, MongoDB."""

    async def probe() -> SystemicError | None:
        faults = await asyncio.gather(topics.probe(), processor.probe(), sink.probe())
        return next((fault for fault in faults if fault is not None), None)

    return probe


def _limiter_open(limiter: AdaptiveLimiter | None, clock: Clock) -> bool:
    if limiter is None:
        return True
    paused_until = limiter.state.paused_until
    return paused_until is None or paused_until <= clock.monotonic()


def _halt_status(halt: Halt | None, clock: Clock) -> dict[str, object] | None:
    if halt is None:
        return None
    since = clock.time() - (clock.monotonic() - halt.since)
    return {"reason": halt.reason, "message": halt.message, "setting": halt.setting,
            "since": round(since, 3)}


def _member_view(loop: ConsumerLoop, consumer: AIOKafkaConsumer, clock: Clock) -> MemberView:
    return MemberView(
        assignment=consumer.assignment,
        paused=consumer.paused,
        in_flight=lambda: loop.in_flight,
        halt=lambda: _halt_status(loop.halt, clock),
    )


class _Background:
    """Tasks that live as long as the member. One that dies (a bug: each handles the
    failures it expects) is logged and stops the member, whose `serve` then raises its
    exception after the drain: a member must not run on without its gauges or its topic
    checks."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: BaseException | None = None

    def start(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(self._ended)
        self._tasks.append(task)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            error = RuntimeError(f"{task.get_name()} returned")
        log.error("%s died; stopping the member", task.get_name(), exc_info=error)
        if self.failure is None:
            self.failure = error
        self._stop.set()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


SHUTDOWN_STEP_TIMEOUT_S = 1.5
"""Leaving the group and flushing the producer take milliseconds with a broker; without
one, each gives up after this (the whole stop's bound is in the module docstring)."""


async def _bounded(what: str, closing: Callable[[], Awaitable[None]]) -> None:
    try:
        await asyncio.wait_for(closing(), SHUTDOWN_STEP_TIMEOUT_S)
    except TimeoutError:
        log.warning("%s did not finish within %.0f s; going on", what, SHUTDOWN_STEP_TIMEOUT_S)


async def serve(
    settings: Settings, stop: asyncio.Event, processor: Processor | None = None
) -> bool:
    """Run one group member until `stop` is set; raises on a bug or an unusable setting.

    Returns True when the stop drained and committed everything in flight. A background
    task that dies stops the member too, and its exception is raised after the drain.
    `processor`
    replaces the one the settings name (tests inject failures through it); the caller then
    owns its lifecycle.
    """
    clock = SystemClock()
    async with AsyncExitStack() as stack:
        topics = await stack.enter_async_context(TopicReconciler(settings))
        topology = await topics.reconcile(start_up=True)
        if processor is None:
            built = build_processor(settings, clock)
            stack.push_async_callback(built.aclose)
            processor = built
        limiter = processor.limiter if isinstance(processor, HttpProcessor) else None
        sink = MongoSink(
            settings.mongo_url,
            settings.mongo_db,
            settings.mongo_collection,
            halt_after_s=settings.mongo_halt_after_s,
            clock=clock,
        )
        stack.push_async_callback(sink.aclose)
        await sink.ensure_indexes()
        producer = new_producer(settings)
        stack.push_async_callback(_bounded, "flushing the producer", producer.stop)
        await start_client(producer, settings)
        key = member_key(settings)
        consumer = new_consumer(settings, client_id=f"stream-{key}")
        stack.push_async_callback(_bounded, "leaving the group", consumer.stop)
        handler = BatchHandler(settings, processor, sink, Router(producer, topics), clock)
        loop = ConsumerLoop(settings, consumer, handler, clock, _probe(processor, sink, topics))
        probes = Probes(
            loop_stalled_s=lambda: clock.monotonic() - loop.last_iteration,
            joined=lambda: loop.joined,
            mongo_ok=lambda: sink.healthy,
            limiter_open=lambda: _limiter_open(limiter, clock),
            halted=lambda: None if loop.halt is None else loop.halt.message,
        )
        # Bound before the consumer starts: a taken port must not cost the group a rebalance.
        server = await stack.enter_async_context(
            HttpServer(routes(probes), "0.0.0.0", settings.metrics_port)  # noqa: S104 - probes
        )
        await start_client(consumer, settings)
        background = _Background(stop)
        stack.push_async_callback(background.aclose)
        background.start("the limiter and MongoDB watch", _watch(limiter, sink, clock))
        reporter = StatusReporter(settings, key, _member_view(loop, consumer, clock))
        reporter.start()
        stack.push_async_callback(reporter.aclose)
        loop.subscribe(topology.retry_topics)
        background.start(
            "the topic check", topics.watch(lambda changed: loop.subscribe(changed.retry_topics))
        )
        log.info(
            "started",
            extra={
                "topic": settings.topic,
                "partitions": topology.partitions[settings.topic],
                "retry_levels": [settings.retry_level(t) for t in topology.retry_topics],
                "group": settings.group_id,
                "processor": processor.name,
                "metrics_port": server.port,
            },
        )
        drained = await loop.run(stop)
        if background.failure is not None:
            raise background.failure
        if drained:
            log.info("stopped: drained and committed")
        else:
            log.warning("stopped: the drain timed out; uncommitted records will be redelivered")
        return drained


FORCED_EXIT_BASE = 128
"""A forced exit reports 128 + the signal number, as shells do for a killed command."""


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="stream run",
        description="Run one consumer of the group. Configuration comes from STREAM_* "
        "environment variables, read once at start; a bad one stops start-up (exit 2).",
        epilog=help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _report(message: str) -> None:
    """One line on stderr: what an operator reads when `stream run` cannot go on."""
    print(f"stream run: {message}", file=sys.stderr, flush=True)


async def _run(settings: Settings) -> bool:
    """`serve` until SIGTERM/SIGINT; a second signal exits at once, without draining."""
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            _report(f"{sig.name} again: exiting now, without draining")
            sys.stdout.flush()
            os._exit(FORCED_EXIT_BASE + sig.value)
        log.info(
            "stopping: draining in-flight work (the same signal again exits at once)",
            extra={"signal": sig.name, "drain_timeout_s": settings.drain_timeout_s},
        )
        stop.set()

    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, on_signal, sig)
    return await serve(settings, stop)


def main(argv: list[str]) -> int:
    """`stream run`: 0 after a drained stop, 2 on bad settings, 1 when it cannot go on or
    its drain timed out (what was not committed will be redelivered).

    Ordinary failures (bad settings, Kafka unreachable, the metrics port taken, a Kafka
    error) are reported on stderr without a traceback; anything else is a bug and crashes
    with one.
    """
    _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        errors = exc.errors if isinstance(exc, InvalidSettings) else (exc,)
        _report(f"{len(errors)} configuration error(s); see `stream run --help`")
        for error in errors:
            print(f"  {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    log.info("settings", extra={"settings": settings.masked()})
    try:
        drained = asyncio.run(_run(settings))
    except PortInUse as exc:
        _report(f"metrics {exc}; set STREAM_METRICS_PORT to a free port (0 = any)")
        return 1
    except StreamError as exc:
        _report(str(exc))
        return 1
    except KafkaError as exc:
        log.exception("stopped by a Kafka error")
        _report(f"Kafka error: {exc}")
        return 1
    except KeyboardInterrupt:  # before the signal handlers are installed
        return FORCED_EXIT_BASE + signal.SIGINT.value
    return 0 if drained else 1
