"""One micro-batch, from fetched records to settled offsets.

The commit sequence, in this order (the order is what makes commits safe):
1. decode every record (`stream.sms.codec`); a malformed one is routed to the DLQ;
2. process the valid SMS concurrently (the processor applies the adaptive limiter);
3. split by outcome: results become documents, failures are routed by `failures.route`
   (next retry topic, or the DLQ); a `SystemicError` halts instead: nothing of the batch
   is written, published or settled;
4. if the batch would push the dead-lettered share over the breaker's limit, halt likewise;
5. write the documents (the sink returns once they are durable) and publish the failures
   (the publisher returns once every in-sync replica has them), concurrently; a document
   the server refuses for good is then published to the DLQ with the sink's reason
   (`unstorable`, `duplicate_key`), unless that pushes the breaker over its limit: then
   halt; a sink that says the server refuses every write halts likewise (`mongo_refused`,
   probed), and so does a publisher that meets a retry or DLQ topic that is missing and
   cannot be created (`topic_missing`, probed);
6. settle every offset of the batch;
7. the loop commits, per partition, one past the end of the settled prefix.
If step 5 cannot complete (MongoDB or Kafka down), the batch waits there and nothing is
settled; the loop pauses fetching once too much is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from stream.clock import Clock
from stream.config import Settings
from stream.engine.failures import Delivery, Failure, Origin, origin_of, route
from stream.engine.halt import DLQ_BREAKER_REASON, DeadLetterBreaker, Halted
from stream.engine.offsets import PartitionOffsets
from stream.engine.ports import Processor, Publisher, Sink
from stream.errors import PermanentError, ProcessingError, SystemicError
from stream.observability import metrics
from stream.sms.codec import decode_sms
from stream.sms.document import stored_document
from stream.sms.models import Sms

__all__ = ["Batch", "BatchHandler"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Batch:
    """Fetched records, in fetch order, and per partition the offsets state of the
    assignment they were fetched under (the one they settle into) and their offsets.

    Built by the loop without an object per record: the hot path of a backlog.
    """

    records: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)
    partitions: dict[TopicPartition, tuple[PartitionOffsets, list[int]]] = field(
        default_factory=dict
    )

    def add(
        self, tp: TopicPartition, offsets: PartitionOffsets,
        records: list[ConsumerRecord[bytes, bytes]],
    ) -> None:
        self.records.extend(records)
        numbers = [record.offset for record in records]
        offsets.track(numbers)
        entry = self.partitions.get(tp)
        if entry is None:
            self.partitions[tp] = (offsets, numbers)
        else:
            entry[1].extend(numbers)

    def settle(self) -> None:
        for offsets, numbers in self.partitions.values():
            offsets.settle(numbers)

    def __len__(self) -> int:
        return len(self.records)


class BatchHandler:
    """Takes one micro-batch through decode -> process -> sink/publish -> settle."""

    def __init__(
        self,
        settings: Settings,
        processor: Processor,
        sink: Sink,
        publisher: Publisher,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._processor = processor
        self._sink = sink
        self._publisher = publisher
        self._clock = clock
        self._topics = (*settings.retry_topics, settings.dlq_topic)
        self._breaker = DeadLetterBreaker(
            window_s=settings.dlq_halt_window_s,
            ratio=settings.dlq_halt_ratio,
            min_count=settings.dlq_halt_min,
        )

    def _failure(
        self, record: ConsumerRecord[bytes, bytes], origin: Origin, error: ProcessingError
    ) -> Delivery:
        now = datetime.fromtimestamp(self._clock.time(), UTC)
        where = route(
            error, origin, self._settings.retry_level(record.topic), self._settings.retry_delays_s,
            now,
        )
        metrics.PROCESSING_ERRORS.labels(error.reason).inc()
        if where.retry_level is None:
            topic = self._settings.dlq_topic
            metrics.DEAD_LETTERED.labels(error.reason).inc()
            log.warning(
                "dead-lettered at attempt %d: %s",
                where.attempt,
                error.reason,
                extra={
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "reason": error.reason,
                },
            )
        else:
            topic = self._topics[where.retry_level - 1]
            metrics.RETRIED.labels(str(where.retry_level)).inc()
        failure = Failure(
            origin=origin,
            attempt=where.attempt,
            error_class=error.reason,
            error_message=str(error),
            first_failed_at=origin.first_failed_at or now,
            not_before=where.not_before,
        )
        return Delivery.failed(
            topic=topic,
            key=record.key,
            value=record.value,
            original_headers=record.headers,
            failure=failure,
        )

    async def handle(self, batch: Batch) -> None:
        """Settle every record of `batch`; or raise `Halted`, or be cancelled, leaving
        them unsettled for redelivery (the module docstring has the steps)."""
        started = self._clock.monotonic()
        metrics.BATCH_SIZE.observe(len(batch))
        deliveries: list[Delivery] = []
        valid: list[tuple[ConsumerRecord[bytes, bytes], Sms, Origin]] = []
        max_bytes = self._settings.max_sms_bytes
        per_topic: defaultdict[str, int] = defaultdict(int)
        for record in batch.records:
            per_topic[record.topic] += 1
            origin = origin_of(record.topic, record.partition, record.offset, record.headers)
            try:
                valid.append((record, decode_sms(record.value, max_bytes), origin))
            except PermanentError as error:
                deliveries.append(self._failure(record, origin, error))
        for topic, count in per_topic.items():
            metrics.RECORDS_CONSUMED.labels(topic).inc(count)

        results = await self._processor.process_many([sms for _, sms, _ in valid])
        now = datetime.fromtimestamp(self._clock.time(), UTC)
        documents: list[dict[str, Any]] = []
        stored_from: list[tuple[ConsumerRecord[bytes, bytes], Origin]] = []
        for (record, sms, origin), result in zip(valid, results, strict=True):
            if isinstance(result, SystemicError):
                raise Halted(result.reason, str(result), result.setting, probe=True)
            if isinstance(result, ProcessingError):
                deliveries.append(self._failure(record, origin, result))
            else:
                documents.append(stored_document(
                    sms, result, processor=self._processor.name, processed_at=now,
                    attempts=origin.previous_attempts + 1, topic=origin.topic,
                    partition=origin.partition, offset=origin.offset,
                ))
                stored_from.append((record, origin))
        dead = sum(1 for d in deliveries if d.topic == self._settings.dlq_topic)
        self._check_breaker(len(batch), dead)

        written, published = await asyncio.gather(
            self._sink.write(documents),
            self._publisher.publish(deliveries),
            return_exceptions=True,
        )
        if isinstance(published, BaseException):
            raise published
        if isinstance(written, SystemicError):
            raise Halted(written.reason, str(written), written.setting, probe=True)
        if isinstance(written, BaseException):
            raise written
        if written.rejected:
            self._check_breaker(0, len(written.rejected))
            refused = [
                self._failure(*stored_from[r.index], PermanentError(r.message, reason=r.reason))
                for r in written.rejected
            ]
            await self._publisher.publish(refused)
        batch.settle()
        metrics.STORED.inc(written.inserted)
        metrics.ALREADY_STORED.inc(len(documents) - len(written.rejected) - written.inserted)
        now_ms = self._clock.time() * 1000
        metrics.observe_many(
            metrics.END_TO_END_DELAY,
            [max(0.0, (now_ms - record.timestamp) / 1000) for record, _ in stored_from],
        )
        metrics.BATCH_CYCLE.observe(self._clock.monotonic() - started)

    def _check_breaker(self, total: int, dead: int) -> None:
        """Count `total` more settled records, `dead` more dead letters, before those are
        published (concurrent batches see each other's), or halt instead of publishing.

        Called before the write with the batch's size and its failures, and after it with
        0 and the documents the sink refused (the batch was counted already)."""
        now = self._clock.monotonic()
        if self._breaker.would_trip(now, total, dead):
            settings = self._settings
            raise Halted(
                DLQ_BREAKER_REASON,
                f"more than {settings.dlq_halt_ratio:.0%} of the records of the last "
                f"{settings.dlq_halt_window_s:g} s would go to the dead-letter topic "
                f"({dead} more from one batch): a bad deploy, a broken producer, or a "
                "unique index the SMS clash on?",
                "STREAM_DLQ_HALT_RATIO",
                probe=False,
            )
        self._breaker.record(now, total, dead)
