"""The job written with Sentry's arroyo: RunTask(decode + parse) -> BatchStep -> RunTask(write)
-> CommitOffsets, run by a StreamProcessor on arroyo's librdkafka consumer.

`python -m bench.peers.arroyo_job BOOTSTRAP TOPIC GROUP MONGO_URL DB COLLECTION`, run with
the arroyo venv's python (bench/peers/venvs.py). The strategy chain is the one arroyo's
getting-started guide and `examples/transform_and_produce/batched.py` build: a batch is
written with one unordered `insert_many`, and only then do its offsets reach
CommitOffsets, which commits them under the commit policy. Stops on SIGTERM through
`StreamProcessor.signal_shutdown`, which joins the strategies (the last batch is written
and committed) before closing the consumer.

Settings, and why:
- batches of at most BATCH_MAX records or BATCH_WAIT_S, `stream run`'s defaults
  (STREAM_BATCH_MAX, STREAM_BATCH_WAIT_MS), so both write batches of the same size.
- commit policy ONCE_PER_SECOND (the StreamProcessor's default) with arroyo's explicit
  commits (`enable_auto_commit=False`, as in the guide): the config builder's default,
  librdkafka's auto-commit, would commit every 5 s and add up to 5 s of idle tail to a
  run timed until everything is committed.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from arroyo.backends.kafka import KafkaConsumer, KafkaPayload
from arroyo.backends.kafka.configuration import build_kafka_consumer_configuration
from arroyo.commit import ONCE_PER_SECOND
from arroyo.processing import StreamProcessor
from arroyo.processing.strategies import (
    BatchStep,
    CommitOffsets,
    ProcessingStrategy,
    ProcessingStrategyFactory,
    RunTask,
)
from arroyo.processing.strategies.batching import ValuesBatch
from arroyo.types import BrokerValue, Commit, Message, Partition, Topic
from pymongo.collection import Collection

from bench.peers.common import (
    Parsed,
    decoded,
    document,
    open_collection,
    parse_args,
    write_unordered,
)

__all__ = ["main"]

BATCH_MAX = 500
BATCH_WAIT_S = 0.05
"""STREAM_BATCH_MAX and STREAM_BATCH_WAIT_MS's defaults: the same batches as `stream run`."""


class Pending(NamedTuple):
    """A decoded, parsed record on its way to the batch write, with where it came from."""

    parsed: Parsed
    topic: str
    partition: int
    offset: int


def decode(message: Message[KafkaPayload]) -> Pending:
    """RunTask's function for every record: decode_sms + parse_sms."""
    value = message.value
    if not isinstance(value, BrokerValue):  # only a Reduce step makes other values
        raise TypeError(f"expected a record straight from the broker, got {value!r}")
    where = value.partition
    return Pending(decoded(message.payload.value), where.topic.name, where.index, value.offset)


class StoreFactory(ProcessingStrategyFactory[KafkaPayload]):
    """Builds the strategy chain for every assignment; the collection outlives them."""

    def __init__(self, collection: Collection[Any]) -> None:
        self._collection = collection

    def _write(self, message: Message[ValuesBatch[Pending]]) -> ValuesBatch[Pending]:
        now = datetime.now(UTC)
        documents = [
            document(
                v.payload.parsed,
                "arroyo",
                now,
                v.payload.topic,
                v.payload.partition,
                v.payload.offset,
            )
            for v in message.payload
        ]
        write_unordered(self._collection, documents)
        return message.payload

    def create_with_partitions(
        self, commit: Commit, partitions: Mapping[Partition, int]
    ) -> ProcessingStrategy[KafkaPayload]:
        return RunTask(
            decode,
            BatchStep(BATCH_MAX, BATCH_WAIT_S, RunTask(self._write, CommitOffsets(commit))),
        )


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    client, collection = open_collection(args.mongo_url, args.db, args.collection)
    consumer = KafkaConsumer(
        build_kafka_consumer_configuration(
            default_config={},
            bootstrap_servers=[args.bootstrap],
            auto_offset_reset="earliest",
            group_id=args.group,
            enable_auto_commit=False,
        )
    )
    processor = StreamProcessor(
        consumer=consumer,
        topic=Topic(args.topic),
        processor_factory=StoreFactory(collection),
        commit_policy=ONCE_PER_SECOND,
    )
    signal.signal(signal.SIGTERM, lambda _signum, _frame: processor.signal_shutdown())
    signal.signal(signal.SIGINT, lambda _signum, _frame: processor.signal_shutdown())
    try:
        processor.run()
    finally:
        client.close()


if __name__ == "__main__":
    main(sys.argv[1:])
