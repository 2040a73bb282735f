"""One micro-batch, from fetched records to settled offsets.

Steps, in this order (the order is what makes commits safe):
1. decode every record; malformed ones are dead-lettered with the reason;
2. process the valid SMS concurrently (the processor applies the adaptive limiter);
3. split by outcome: results become documents, transient failures go to the next retry
   topic (or the DLQ after the last one), permanent failures go to the DLQ;
4. write the documents in one bulk insert-if-absent and publish the failures, concurrently; a
   document the server refuses for good is dead-lettered too;
5. only then mark every offset of the batch settled; the consumer loop commits.
If step 4 cannot complete (MongoDB or Kafka down), the batch waits and nothing is settled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import ConsumerRecord

from stream.config import Settings
from stream.engine.failures import (
    ATTEMPT,
    FIRST_FAILED_AT,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
    Delivery,
    header,
)
from stream.engine.offsets import PartitionOffsets
from stream.engine.ports import Processor, Publisher, Sink
from stream.errors import PermanentError, ProcessingError, TransientError
from stream.observability import metrics
from stream.sms.codec import decode_sms
from stream.sms.models import Sms

__all__ = ["BatchHandler", "Fetched"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Fetched:
    """A fetched record and the offsets state it settles into."""

    record: ConsumerRecord
    offsets: PartitionOffsets


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where an SMS first entered, and how many attempts it has had before this one."""

    topic: str
    partition: int
    offset: int
    previous_attempts: int
    first_failed_at: str | None


class BatchHandler:
    """Takes one micro-batch through decode -> process -> sink/route -> settle."""

    def __init__(
        self, settings: Settings, processor: Processor, sink: Sink, router: Publisher
    ) -> None:
        self._settings = settings
        self._processor = processor
        self._sink = sink
        self._router = router
        self._retry_level = {topic: n for n, topic in enumerate(settings.retry_topics, start=1)}

    def _origin(self, record: ConsumerRecord) -> _Origin:
        if record.topic not in self._retry_level:
            return _Origin(record.topic, record.partition, record.offset, 0, None)
        headers = record.headers
        try:
            return _Origin(
                header(headers, ORIGINAL_TOPIC) or record.topic,
                int(header(headers, ORIGINAL_PARTITION) or record.partition),
                int(header(headers, ORIGINAL_OFFSET) or record.offset),
                int(header(headers, ATTEMPT) or self._retry_level[record.topic]),
                header(headers, FIRST_FAILED_AT),
            )
        except ValueError:
            log.warning("retry record with unreadable headers at %s", record.offset)
            level = self._retry_level[record.topic]
            return _Origin(record.topic, record.partition, record.offset, level, None)

    def _failure(self, record: ConsumerRecord, origin: _Origin, error: ProcessingError) -> Delivery:
        attempt = origin.previous_attempts + 1
        metrics.PROCESSING_ERRORS.labels(error.reason).inc()
        delays = self._settings.retry_delays_s
        if isinstance(error, TransientError) and attempt <= len(delays):
            topic = self._settings.retry_topics[attempt - 1]
            delay = max(delays[attempt - 1], error.retry_after or 0.0)
            not_before: datetime | None = datetime.now(UTC) + timedelta(seconds=delay)
            metrics.RETRIED.labels(str(attempt)).inc()
        else:
            topic, not_before = self._settings.dlq_topic, None
            metrics.DEAD_LETTERED.labels(error.reason).inc()
            log.warning(
                "dead-lettered at attempt %d: %s",
                attempt,
                error.reason,
                extra={
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "reason": error.reason,
                },
            )
        return Delivery.failed(
            topic=topic,
            key=record.key,
            value=record.value,
            origin=(origin.topic, origin.partition, origin.offset),
            first_failed_at=origin.first_failed_at,
            attempt=attempt,
            error_class=error.reason,
            error_message=str(error),
            not_before=not_before,
        )

    def _document(
        self, sms: Sms, result: dict[str, Any], origin: _Origin, now: datetime
    ) -> dict[str, Any]:
        return {
            **sms.extra,
            "_id": sms.id,
            "sender": sms.sender,
            "body": sms.body,
            "received_at": sms.received_at,
            "recipient": sms.recipient,
            "meta": sms.meta,
            "parsed": result,
            "processor": self._processor.name,
            "processed_at": now,
            "attempts": origin.previous_attempts + 1,
            "source": {
                "topic": origin.topic,
                "partition": origin.partition,
                "offset": origin.offset,
            },
        }

    async def handle(self, batch: Sequence[Fetched]) -> None:
        """Settle every record of `batch`, or raise/cancel leaving them unsettled."""
        started = time.perf_counter()
        metrics.BATCH_SIZE.observe(len(batch))
        deliveries: list[Delivery] = []
        valid: list[tuple[Fetched, Sms, _Origin]] = []
        max_bytes = self._settings.max_sms_bytes
        per_topic: defaultdict[str, int] = defaultdict(int)
        for item in batch:
            record = item.record
            per_topic[record.topic] += 1
            origin = self._origin(record)
            try:
                valid.append((item, decode_sms(record.value, max_bytes), origin))
            except PermanentError as error:
                deliveries.append(self._failure(record, origin, error))
        for topic, count in per_topic.items():
            metrics.RECORDS_CONSUMED.labels(topic).inc(count)

        results = await self._processor.process_many([sms for _, sms, _ in valid])
        now = datetime.now(UTC)
        documents: list[dict[str, Any]] = []
        stored_from: list[tuple[Fetched, _Origin]] = []
        for (item, sms, origin), result in zip(valid, results, strict=True):
            if isinstance(result, ProcessingError):
                deliveries.append(self._failure(item.record, origin, result))
            else:
                documents.append(self._document(sms, result, origin, now))
                stored_from.append((item, origin))

        written, _ = await asyncio.gather(
            self._sink.write(documents), self._router.publish(deliveries)
        )
        if written.rejected:
            await self._router.publish(
                [
                    self._failure(
                        stored_from[r.index][0].record,
                        stored_from[r.index][1],
                        PermanentError(r.message, reason="unstorable"),
                    )
                    for r in written.rejected
                ]
            )
        _settle(batch)
        metrics.STORED.inc(written.inserted)
        metrics.ALREADY_STORED.inc(len(documents) - len(written.rejected) - written.inserted)
        now_ms = time.time() * 1000
        for item, _ in stored_from:
            metrics.END_TO_END_DELAY.observe(max(0.0, (now_ms - item.record.timestamp) / 1000))
        metrics.BATCH_CYCLE.observe(time.perf_counter() - started)


def _settle(batch: Sequence[Fetched]) -> None:
    by_partition: defaultdict[PartitionOffsets, list[int]] = defaultdict(list)
    for item in batch:
        by_partition[item.offsets].append(item.record.offset)
    for offsets, settled in by_partition.items():
        offsets.settle(settled)
