"""Publishes retry and dead-letter records to Kafka; returns only when they are acknowledged.

The producer is `acks=all` and idempotent (`stream.adapters.kafka.new_producer`), so a
record counts as settled only once every in-sync replica has it. While Kafka is
unavailable the unacknowledged records are sent again with capped backoff, for as long as
it takes: the batch stays unsettled meanwhile, and the caller bounds the wait by
cancelling (shutdown, revocation). A copy too large for the producer's request limit (the
original fitted its topic, but headers were added) is sent without its value, and then
without the original producer's headers, saying so in `stream.value-omitted`: never dropped.
A copy for a topic the reconciler found missing and could not create raises `Halted`
(`topic_missing`) instead of waiting for a topic that will not come back by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from stream.engine.failures import Delivery
from stream.engine.halt import Halted

__all__ = ["Router", "send_delivery"]

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0
"""The producer already retried within its delivery timeout; past that, poll a down
cluster every few seconds."""
LOG_EVERY_S = 30.0
"""An outage fails every attempt; say so twice a minute, not on every retry."""


async def send_delivery(producer: AIOKafkaProducer, delivery: Delivery) -> asyncio.Future[object]:
    """Send one record; the future resolves once it is acknowledged.

    A record with neither key nor value is legal in Kafka but refused by aiokafka's
    `send`; it goes as a batch of its own (to the first partition: with no key there is
    no partition it belongs to)."""
    if delivery.key is not None or delivery.value is not None:
        future: asyncio.Future[object] = await producer.send(
            delivery.topic, value=delivery.value, key=delivery.key, headers=delivery.headers
        )
        return future
    batch = producer.create_batch()
    batch.append(timestamp=None, key=None, value=None, headers=delivery.headers)
    partitions = await producer.partitions_for(delivery.topic)
    sent: asyncio.Future[object] = await producer.send_batch(
        batch, delivery.topic, partition=min(partitions)
    )
    return sent


def _smaller(delivery: Delivery) -> Delivery | None:
    """The next smaller form of a copy the broker found too large; None: nothing to drop."""
    if delivery.value:
        return delivery.without_value()
    smaller = delivery.without_value(keep_foreign_headers=False)
    return None if smaller == delivery else smaller


class TopicGuard(Protocol):
    """Which topics are missing for good (`stream.adapters.topics.TopicReconciler`)."""

    def fault(self, topics: Iterable[str]) -> Halted | None: ...

    async def wait_fault(self, topics: Iterable[str]) -> Halted: ...


class Router:
    """Publishes deliveries and returns only when Kafka acknowledged every one."""

    def __init__(self, producer: AIOKafkaProducer, topics: TopicGuard | None = None) -> None:
        self._producer = producer
        self._topics = topics
        self._logged_at = -LOG_EVERY_S

    async def _send(self, delivery: Delivery) -> asyncio.Future[object]:
        return await send_delivery(self._producer, delivery)

    async def publish(self, deliveries: Sequence[Delivery]) -> None:
        """Send all, wait for all acks, send again what failed; raises `Halted` when one of
        their topics is missing for good, and otherwise only for a record that cannot be
        sent in any form (a bug)."""
        if self._topics is None or not deliveries:
            return await self._publish(deliveries)
        topics = {delivery.topic for delivery in deliveries}
        fault = self._topics.fault(topics)
        if fault is not None:
            raise fault
        sending = asyncio.ensure_future(self._publish(deliveries))
        missing = asyncio.ensure_future(self._topics.wait_fault(topics))
        try:
            await asyncio.wait({sending, missing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sending, missing):
                task.cancel()
            await asyncio.gather(sending, missing, return_exceptions=True)
        if sending.cancelled():
            raise missing.result()
        return sending.result()

    async def _publish(self, deliveries: Sequence[Delivery]) -> None:
        pending = list(deliveries)
        delay = BACKOFF_FIRST_S
        while pending:
            sent: list[tuple[Delivery, asyncio.Future[object]]] = []
            retry: list[Delivery] = []
            outage = False
            for delivery in pending:
                try:
                    sent.append((delivery, await self._send(delivery)))
                except MessageSizeTooLargeError:
                    retry.append(self._shrink(delivery))
                except KafkaError as exc:
                    retry.append(delivery)
                    outage = True
                    self._log_outage(exc, delay)
            results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
            for (delivery, _), result in zip(sent, results, strict=True):
                if isinstance(result, MessageSizeTooLargeError):
                    retry.append(self._shrink(delivery))
                elif isinstance(result, KafkaError):
                    retry.append(delivery)
                    outage = True
                    self._log_outage(result, delay)
                elif isinstance(result, BaseException):
                    raise result
            if outage:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
            pending = retry

    @staticmethod
    def _shrink(delivery: Delivery) -> Delivery:
        smaller = _smaller(delivery)
        if smaller is None:
            raise MessageSizeTooLargeError(
                f"a {delivery.topic} record of {delivery.size()} bytes without value or "
                "foreign headers is still too large"
            )
        log.warning(
            "a %s copy of %d bytes is over the producer's limit; sending it smaller",
            delivery.topic,
            delivery.size(),
        )
        return smaller

    def _log_outage(self, exc: KafkaError, delay: float) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "kafka did not acknowledge retry/DLQ records (%s); retrying in %.1f s",
                type(exc).__name__,
                delay,
            )
