"""Record batches the Kafka client cannot read: found, read by offset, never skipped.

aiokafka decodes every header key as UTF-8 while `getmany` iterates the fetched batches.
A key that is not UTF-8 (legal in Kafka: keys are bytes on the wire) raises
`UnicodeDecodeError` out of `getmany`, naming neither partition nor offset, and raises it
again on every call: the member could never pass that batch. Worse, records of other
partitions that the failing call had already taken are lost to the caller while their
positions moved past them.

So after such a failure every fetchable partition is put back where it stood before the
call (one past its last fetched record, else its commit, else its earliest offset), then
the partitions are fetched one at a time, one record per call. The call that raises stops
at the batch the client cannot read, at the partition's position: from there the
consumer's `read_raw` reads that batch itself (`stream.adapters.raw_records`), and its
records join the others, processed like any record. Only this rare path pays the
one-at-a-time fetches. Should the raw read fail (the broker unavailable), the partition
stays where it is and the next fetch finds the batch again. A partition revoked during any
of these awaits is left alone (the client refuses a seek on it), and the loop drops what
was gathered of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from stream.engine.offsets import OffsetTracker
from stream.engine.ports import Consumer

__all__ = ["fetch_past_unreadable"]

log = logging.getLogger(__name__)

STEP_WAIT_MS = 500
"""After the rewind a partition's records must be fetched again: a local round trip. A
partition that yields nothing within this is left to the next regular fetch."""

BEGINNING_OFFSETS_TIMEOUT_S = 1.0
"""Asking the broker where a partition starts: a round trip; past this the broker is unwell
and offset 0 stands in (see `_rewind`)."""
READ_TIMEOUT_S = 10.0
"""The position and the raw batch (up to the client's fetch size): past this the broker is
unwell, and the next fetch finds the batch again."""

Fetched = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


async def fetch_past_unreadable(consumer: Consumer, tracker: OffsetTracker, room: int) -> Fetched:
    """After `getmany` raised UnicodeDecodeError: up to about `room` records of the
    fetchable partitions, in offset order per partition, those of unreadable batches
    read by `Consumer.read_raw`."""
    fetchable = [  # a partition without a fetch response cannot have been read from
        tp for tp in sorted(consumer.assignment() - consumer.paused())
        if consumer.highwater(tp) is not None
    ]
    starts = await _rewind(consumer, tracker, fetchable)
    fetched: Fetched = {}
    for tp in fetchable:
        if tp not in starts or tp not in consumer.assignment():
            continue  # revoked in an await above: the client refuses it
        if starts[tp] >= (consumer.highwater(tp) or 0):
            continue  # nothing there to fetch
        while room > 0 and tp in consumer.assignment():
            try:
                got = await consumer.getmany(tp, timeout_ms=STEP_WAIT_MS, max_records=1)
            except UnicodeDecodeError as exc:
                raw, after = await _read_raw(consumer, tp, exc)
                if after is None or tp not in consumer.assignment():
                    break  # unreadable now, or revoked meanwhile: the client refuses a seek
                if len(raw) > room:
                    raw, after = raw[:room], raw[room].offset
                consumer.seek(tp, after)
                fetched.setdefault(tp, []).extend(raw)
                room -= len(raw)
                continue
            records = got.get(tp)
            if not records:
                break
            fetched.setdefault(tp, []).extend(records)
            room -= len(records)
    return fetched


async def _read_raw(
    consumer: Consumer, tp: TopicPartition, cause: UnicodeDecodeError
) -> tuple[list[ConsumerRecord[bytes, bytes]], int | None]:
    """The rest of the batch the client failed on and the offset after it; None for that
    offset when the batch cannot be read now."""
    offset: int | None = None
    try:
        offset = await asyncio.wait_for(consumer.read_position(tp), READ_TIMEOUT_S)
        records, after = await asyncio.wait_for(consumer.read_raw(tp, offset), READ_TIMEOUT_S)
    except (KafkaError, TimeoutError) as exc:
        log.warning(
            "cannot read the batch at %s-%d@%s past a header key that is not UTF-8 (%r); "
            "trying again at the next fetch",
            tp.topic, tp.partition, offset, exc,
        )
        return [], None
    log.warning(
        "the Kafka client cannot decode a header key at %s-%d@%d (%s); read %d records "
        "of that batch directly",
        tp.topic, tp.partition, offset, cause.reason, len(records),
        extra={"topic": tp.topic, "partition": tp.partition, "offset": offset},
    )
    return records, after


async def _rewind(
    consumer: Consumer, tracker: OffsetTracker, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """Seek each of `tps` to where it stood before the failed call; return those offsets."""
    starts: dict[TopicPartition, int] = {}
    unknown: list[TopicPartition] = []
    for tp in tps:
        state = tracker.partition(tp)
        start = state.fetched_to if state.fetched_to is not None else state.committed
        if start is None:
            unknown.append(tp)
        else:
            starts[tp] = start
    if unknown:
        # Offset 0 when the broker cannot say: below the log start the client resets to
        # the earliest offset (`auto_offset_reset=earliest`), which is where it starts.
        earliest = dict.fromkeys(unknown, 0)
        with contextlib.suppress(KafkaError, TimeoutError):
            earliest = await asyncio.wait_for(
                consumer.beginning_offsets(unknown), BEGINNING_OFFSETS_TIMEOUT_S
            )
        starts |= earliest
    assigned = consumer.assignment()  # a revocation may have landed in the await above
    starts = {tp: start for tp, start in starts.items() if tp in assigned}
    for tp, start in starts.items():
        consumer.seek(tp, start)
    return starts
