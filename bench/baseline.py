"""The hand-written baseline: the least code doing `stream run`'s I/O, to measure our overhead.

`python -m bench.baseline BOOTSTRAP TOPIC GROUP MONGO_URL DB COLLECTION` is one consumer of
a group, strictly sequential: `getmany(max_records=500)` -> `orjson.loads` -> `parse_sms`
-> `insert_many(ordered=False)` -> `commit`, until SIGTERM. It stores the same document
(same fields, same `_id`) with the same write concern as stream/sink.py, so both pay for
the same bytes and the same durable write; it has no validation, retries, DLQ, metrics,
overlap or backpressure. Run as a child process like `stream run`, so both pay the same
interpreter start-up.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError
from pymongo.write_concern import WriteConcern

from stream.sms.parser import parse_sms

BATCH = 500
"""STREAM_BATCH_MAX's default, so both fetch the same batches."""
WAIT_MS = 50
"""STREAM_BATCH_WAIT_MS's default."""
DUPLICATE_KEY = 11000


def _document(value: bytes, topic: str, partition: int, offset: int, now: datetime) -> Any:
    sms = orjson.loads(value)
    sms_id = sms.pop("id")
    return {
        **sms,
        "_id": sms_id,
        "received_at": datetime.fromisoformat(sms["received_at"]),
        "meta": sms.get("meta"),
        "parsed": parse_sms(sms["body"], sms["sender"]),
        "processor": "baseline",
        "processed_at": now,
        "attempts": 1,
        "source": {"topic": topic, "partition": partition, "offset": offset},
    }


async def run(bootstrap: str, topic: str, group: str, url: str, db: str, name: str) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=BATCH,
    )
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    collection = client[db].get_collection(name, write_concern=WriteConcern(w="majority", j=True))
    await consumer.start()
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=WAIT_MS, max_records=BATCH)
            now = datetime.now(UTC)
            documents = [
                _document(r.value, r.topic, r.partition, r.offset, now)
                for records in fetched.values()
                for r in records
            ]
            if not documents:
                continue
            try:
                await collection.insert_many(documents, ordered=False)
            except BulkWriteError as exc:
                if any(e["code"] != DUPLICATE_KEY for e in exc.details["writeErrors"]):
                    raise
            await consumer.commit()
    finally:
        await consumer.stop()
        await client.close()


if __name__ == "__main__":
    asyncio.run(run(*sys.argv[1:7]))
