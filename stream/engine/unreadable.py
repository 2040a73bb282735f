"""Records the Kafka client cannot hand over: found, stepped past, dead-lettered by offset.

aiokafka decodes every header key as UTF-8 while `getmany` iterates the fetched batches.
A key that is not UTF-8 (legal in Kafka: keys are bytes on the wire) raises
`UnicodeDecodeError` out of `getmany`, naming neither partition nor offset, and raises it
again on every call: the member could never pass that record. Worse, records of other
partitions that the failing call had already taken are lost to the caller while their
positions moved past them.

So after such a failure every fetchable partition is put back where it stood before the
call (one past its last fetched record, else its commit, else its earliest offset), then
the partitions are fetched one at a time, one record per call. The call that raises is
at the unreadable record: its offset is the partition's position. That offset is stepped
past and handed to the batch as a placeholder record (no key, an empty value), which the
batch dead-letters as `unreadable_record` naming topic, partition and offset: the
original stays in the topic for as long as its retention keeps it, to be read with a
client that accepts it. Only this rare path pays the one-at-a-time fetches.
"""

from __future__ import annotations

import logging

from aiokafka import ConsumerRecord, TopicPartition

from stream.engine.offsets import OffsetTracker
from stream.engine.ports import Consumer

__all__ = ["UNREADABLE_REASON", "Unreadable", "fetch_past_unreadable"]

log = logging.getLogger(__name__)

UNREADABLE_REASON = "unreadable_record"
STEP_WAIT_MS = 500
"""After the rewind a partition's records must be fetched again: a local round trip. A
partition that yields nothing within this is left to the next regular fetch."""

Fetched = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


Unreadable = dict[tuple[str, int, int], str]
"""Why each placeholder's record could not be read, by (topic, partition, offset)."""


def _placeholder(tp: TopicPartition, offset: int) -> ConsumerRecord[bytes, bytes]:
    """Stands for an unreadable record in the batch, so its offset is tracked and settled
    in order with the records around it."""
    return ConsumerRecord(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        timestamp=-1,
        timestamp_type=0,
        key=None,
        value=b"",
        checksum=None,
        serialized_key_size=-1,
        serialized_value_size=0,
        headers=(),
    )


async def fetch_past_unreadable(
    consumer: Consumer, tracker: OffsetTracker, room: int
) -> tuple[Fetched, Unreadable]:
    """After `getmany` raised UnicodeDecodeError: up to `room` records of the fetchable
    partitions, in offset order per partition, with a placeholder for each record the
    client cannot read, and why."""
    unreadable: Unreadable = {}
    fetchable = sorted(consumer.assignment() - consumer.paused())
    starts = await _rewind(consumer, tracker, fetchable)
    fetched: Fetched = {}
    for tp in fetchable:
        end = consumer.highwater(tp)
        if end is not None and starts.get(tp, 0) >= end:
            continue  # nothing there to fetch
        while room > 0:
            try:
                got = await consumer.getmany(tp, timeout_ms=STEP_WAIT_MS, max_records=1)
            except UnicodeDecodeError as exc:
                offset = await consumer.position(tp)
                consumer.seek(tp, offset + 1)
                fetched.setdefault(tp, []).append(_placeholder(tp, offset))
                unreadable[tp.topic, tp.partition, offset] = (
                    f"the Kafka client cannot read record {tp.topic}-{tp.partition}@{offset} "
                    f"({exc}); it is still in the topic"
                )
                room -= 1
                log.error(  # noqa: TRY400 - the record is the news, not our stack
                    "record %s-%d@%d cannot be read by the Kafka client (%s); "
                    "dead-lettering it by its offset",
                    tp.topic, tp.partition, offset, exc,
                    extra={"topic": tp.topic, "partition": tp.partition, "offset": offset},
                )
                continue
            records = got.get(tp)
            if not records:
                break
            fetched.setdefault(tp, []).extend(records)
            room -= len(records)
    return fetched, unreadable


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
        starts |= await consumer.beginning_offsets(unknown)
    for tp, start in starts.items():
        consumer.seek(tp, start)
    return starts
