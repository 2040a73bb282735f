"""Publishes retry and dead-letter records to Kafka; returns only when they are acknowledged.

The producer is `acks=all` and idempotent (`stream.adapters.kafka.new_producer`), so a
record counts as settled only once every in-sync replica has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from stream.engine.failures import Delivery

__all__ = ["Router"]


class Router:
    """Publishes deliveries and returns only when Kafka acknowledged every one."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def publish(self, deliveries: Sequence[Delivery]) -> None:
        """Send all, then wait for all acks; raises the producer's error if any failed.

        The producer retries internally (idempotently), so an error here means Kafka is
        unavailable beyond the producer's delivery timeout: the caller must not settle.
        """
        if not deliveries:
            return
        futures = [
            await self._producer.send(d.topic, value=d.value, key=d.key, headers=d.headers)
            for d in deliveries
        ]
        await asyncio.gather(*futures)
