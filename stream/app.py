"""`stream run`: one member of the consumer group, from start-up to a drained exit.

Resources open in one AsyncExitStack and close in reverse order, so on SIGTERM/SIGINT the
loop drains and commits first, then the consumer leaves the group, then the producer
flushes, then MongoDB and the HTTP client close.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
from contextlib import AsyncExitStack

from stream.adapters.kafka import ensure_topics, new_consumer, new_producer
from stream.adapters.mongo import MongoSink
from stream.adapters.publisher import Router
from stream.config import Settings
from stream.engine.batch import BatchHandler
from stream.engine.loop import ConsumerLoop
from stream.engine.ports import Processor
from stream.errors import ConfigError
from stream.observability import logs, metrics
from stream.observability.health import Probes, routes
from stream.observability.httpserver import HttpServer
from stream.processors.builtin import BuiltinProcessor
from stream.processors.http import HttpProcessor
from stream.processors.limiter import AdaptiveLimiter

__all__ = ["build_processor", "main", "serve"]

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 1.0
MONGO_PING_EVERY = 5
"""Readiness pings MongoDB every 5 s: often enough for a probe, rare enough to be free."""


def build_processor(settings: Settings) -> BuiltinProcessor | HttpProcessor:
    """The processor `settings.processor` names; the caller closes it."""
    if settings.processor == "http":
        return HttpProcessor(settings)
    return BuiltinProcessor()


async def _watch(limiter: AdaptiveLimiter | None, sink: MongoSink) -> None:
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
            paused = state.paused_until is not None and state.paused_until > time.monotonic()
            metrics.LIMITER_PAUSED.set(1 if paused else 0)
        if tick % MONGO_PING_EVERY == 0:
            await sink.ping()
        tick += 1
        await asyncio.sleep(WATCH_INTERVAL_S)


def _limiter_open(limiter: AdaptiveLimiter | None) -> bool:
    if limiter is None:
        return True
    paused_until = limiter.state.paused_until
    return paused_until is None or paused_until <= time.monotonic()


async def serve(
    settings: Settings, stop: asyncio.Event, processor: Processor | None = None
) -> None:
    """Run one group member until `stop` is set; raises on a bug or an unusable setting.

    `processor` replaces the one the settings name (tests inject failures through it); the
    caller then owns its lifecycle.
    """
    async with AsyncExitStack() as stack:
        partitions = await ensure_topics(settings)
        if processor is None:
            built = build_processor(settings)
            stack.push_async_callback(built.aclose)
            processor = built
        limiter = processor.limiter if isinstance(processor, HttpProcessor) else None
        sink = MongoSink(settings.mongo_url, settings.mongo_db, settings.mongo_collection)
        stack.push_async_callback(sink.aclose)
        await sink.ensure_indexes()
        producer = new_producer(settings)
        await producer.start()
        stack.push_async_callback(producer.stop)
        consumer = new_consumer(settings)
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        loop = ConsumerLoop(
            settings, consumer, BatchHandler(settings, processor, sink, Router(producer))
        )
        probes = Probes(
            last_iteration=lambda: loop.last_iteration,
            joined=lambda: loop.joined,
            mongo_ok=lambda: sink.healthy,
            limiter_open=lambda: _limiter_open(limiter),
        )
        server = await stack.enter_async_context(
            HttpServer(routes(probes), "0.0.0.0", settings.metrics_port)  # noqa: S104 - probes
        )
        watcher = asyncio.create_task(_watch(limiter, sink))
        stack.callback(watcher.cancel)
        loop.subscribe()
        log.info(
            "started: topic %s (%d partitions), group %s, processor %s, metrics port %d",
            settings.topic,
            partitions,
            settings.group_id,
            processor.name,
            server.port,
            extra={"topic": settings.topic},
        )
        await loop.run(stop)
        log.info("stopped: drained and committed")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="stream run",
        description="Run one consumer of the group. Configuration comes from STREAM_* "
        "environment variables (see the README).",
    )
    parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"stream run: configuration error: {exc}", flush=True)
        return 2
    logs.configure(settings.log_level)
    log.info("settings: %s", settings.masked())

    async def run() -> None:
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(run())
    return 0
