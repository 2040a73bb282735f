"""The consumer's physical limit here: a bare aiokafka `getmany` loop that only commits.

`python -m bench.peers.getmany BOOTSTRAP TOPIC GROUP MONGO_URL DB COLLECTION` (the Mongo
arguments are taken, for one argv across the jobs, and unused). The loop of
bench/baseline.py with the decode, the parse and the write taken out: fetch up to
BATCH records, commit, again, until SIGTERM. Nothing `stream run` does can be faster on
this consumer, so `stream run`'s SMS/s over this loop's is the share of the limit reached.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiokafka import AIOKafkaConsumer

from bench.baseline import BATCH, WAIT_MS
from bench.peers.common import parse_args

__all__ = ["run"]


async def run(bootstrap: str, topic: str, group: str) -> None:
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
    await consumer.start()
    try:
        while not stop.is_set():
            if await consumer.getmany(timeout_ms=WAIT_MS, max_records=BATCH):
                await consumer.commit()
    finally:
        await consumer.stop()


if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    asyncio.run(run(args.bootstrap, args.topic, args.group))
