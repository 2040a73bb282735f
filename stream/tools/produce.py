"""`stream produce`: put SMS on the main topic, from a JSON-lines file or the synthetic generator.

The demo, the benchmarks and an operator feeding a test cluster all go through
`produce_records`, so they share one producer set-up: `acks=all` and idempotence (a record
is counted only once every in-sync replica has it), sends that are not awaited one by one,
and acknowledgements awaited per chunk so the producer's batches stay full.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from datetime import datetime
from typing import IO

import orjson
from aiokafka import AIOKafkaProducer

from stream.adapters.kafka import client_options, compression_type
from stream.adapters.topics import ensure_topics
from stream.config import Settings
from stream.errors import StreamError
from stream.tools.common import EXIT_FAILED, EXIT_OK, fail, run_tool
from stream.tools.synthetic import DEFAULT_MAX_SMS_BYTES, malformed_records, synthetic_sms

__all__ = ["Pacer", "file_records", "main", "produce_records", "synthetic_records"]

Record = tuple[bytes | None, bytes]
"""(key, value) of one record to produce."""

LINGER_MS = 10
"""Long enough for a partition's batch to fill at tens of thousands of records/s, short
enough that a paced trickle is not visibly delayed."""

MAX_BATCH_BYTES = 256 * 1024
"""Per-partition batch: 16 KiB (the default) caps a request at ~60 SMS; 256 KiB lets one
request carry a linger's worth at full speed."""

ACK_CHUNK = 5_000
"""Records whose acknowledgements are awaited together; one chunk is always left in flight
while the next one is sent, so waiting for acks never drains the pipeline."""

ACK_CHUNK_MAX_AGE_S = 0.25
"""At slow rates a chunk also closes after this long, so progress and errors show promptly."""

PACING_SLACK_S = 0.005
"""A paced producer sleeps only when this far ahead of schedule: at high rates records go
in short bursts instead of one sleep each (asyncio cannot sleep microseconds anyway)."""

MAX_BURST_S = 1.0
"""Token-bucket depth: after a stall (a slow broker) at most one second's worth of records
is sent at once to catch up; the rest of the debt is forgiven rather than flooded."""

DUPLICATE_WINDOW = 1_000
"""Synthetic duplicates re-send one of the last N SMS, like a producer retrying recent work."""

PROGRESS_INTERVAL_S = 0.2

PROG = "stream produce"


class Pacer:
    """A token bucket for `rate` records/s, without drift.

    Record `n` is due at `start + n / rate`: due times are computed from the start, not from
    the previous record, so late wake-ups never accumulate into a lower rate.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self._rate = rate
        self._start = time.monotonic()

    async def wait(self, n: int) -> None:
        """Return when record `n` (0-based) may be sent."""
        ahead = self._start + n / self._rate - time.monotonic()
        if ahead > PACING_SLACK_S:
            await asyncio.sleep(ahead)
        elif ahead < -MAX_BURST_S:
            self._start -= ahead + MAX_BURST_S


async def produce_records(
    settings: Settings,
    values: Iterable[Record],
    *,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Produce (key, value) pairs to `settings.topic`; return how many Kafka acknowledged.

    Called by `stream produce`, the demo and the benchmarks; the topic must exist (see
    `ensure_topics`). `progress` gets the acknowledged count after each chunk. Raises the
    producer's KafkaError if a record could not be delivered. Whatever iterating `values`
    raises propagates once the records before it are acknowledged, and `progress` has
    been told their count first, so a caller can say how many were sent.
    """
    producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=LINGER_MS,
        max_batch_size=MAX_BATCH_BYTES,
        compression_type=compression_type(settings),
    )
    acked = 0
    in_flight: list[asyncio.Future[object]] = []
    chunk: list[asyncio.Future[object]] = []

    async def settle_all() -> None:
        nonlocal acked
        for futures in (in_flight, chunk):
            await asyncio.gather(*futures)
            acked += len(futures)
        in_flight.clear()
        chunk.clear()
        if progress is not None:
            progress(acked)

    await producer.start()
    try:
        pacer = Pacer(rate) if rate else None
        chunk_opened = time.monotonic()
        source = iter(values)
        sent = 0
        while True:
            try:
                record = next(source, None)
            except Exception:
                await settle_all()
                raise
            if record is None:
                break
            if pacer is not None:
                await pacer.wait(sent)
            key, value = record
            chunk.append(await producer.send(settings.topic, value=value, key=key))
            sent += 1
            if len(chunk) >= ACK_CHUNK or time.monotonic() - chunk_opened >= ACK_CHUNK_MAX_AGE_S:
                await asyncio.gather(*in_flight)
                acked += len(in_flight)
                in_flight, chunk = chunk, []
                chunk_opened = time.monotonic()
                if progress is not None:
                    progress(acked)
        await settle_all()
    finally:
        await producer.stop()
    return acked


def synthetic_records(
    rng: random.Random,
    *,
    count: int,
    malformed: int = 0,
    duplicates: int = 0,
    start: datetime | None = None,
    max_sms_bytes: int = DEFAULT_MAX_SMS_BYTES,
) -> Iterator[Record]:
    """`count` synthetic SMS keyed by sender, plus `malformed` unkeyed bad values and
    `duplicates` re-sent SMS, each at random positions: `count + malformed + duplicates`
    records in all, the same ones for the same seed. `max_sms_bytes` is the processor's
    STREAM_MAX_SMS_BYTES, so the oversize malformed record is just over it.

    A duplicate always follows its original, since every duplicate position is drawn
    after the first SMS. Raises ValueError for duplicates without any SMS to repeat.
    """
    if duplicates and not count:
        raise ValueError("duplicates need at least one SMS to repeat")
    total = count + malformed + duplicates
    bad_at = set(rng.sample(range(total), malformed))
    repeat_at = set(rng.sample(range(1, count + duplicates), duplicates))
    bad = iter(malformed_records(rng, malformed, max_bytes=max_sms_bytes))
    fresh = synthetic_sms(rng, count=count, start=start)
    recent: deque[Record] = deque(maxlen=DUPLICATE_WINDOW)
    good = 0
    for position in range(total):
        if position in bad_at:
            yield None, next(bad)
            continue
        if good in repeat_at:
            yield recent[rng.randrange(len(recent))]
        else:
            sms = next(fresh)
            record = (sms["sender"].encode(), orjson.dumps(sms))
            recent.append(record)
            yield record
        good += 1


def file_records(lines: Iterable[bytes], *, name: str, raw: bool = False) -> Iterator[Record]:
    """One record per JSON line, the value being the line's bytes as they are.

    The key is the object's `sender` when it has a string one. Unless `raw`, blank lines
    are skipped and any other line that is not a JSON object raises StreamError naming
    `name` and the line (lines before it have been yielded); `raw` yields every line so
    malformed records can be produced on purpose.
    """
    for number, line in enumerate(lines, start=1):
        value = line.rstrip(b"\r\n")
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            if raw:
                yield None, value
                continue
            if not value.strip():
                continue
            raise StreamError(f"{name}:{number}: not a JSON object (use --raw to send it anyway)")
        sender = obj.get("sender")
        yield (sender.encode() if isinstance(sender, str) else None), value


class _Progress:
    """A one-line `\\r` progress bar on stderr: count, rate and (when the total is known) ETA."""

    def __init__(self, stream: IO[str], total: int | None) -> None:
        self._stream = stream
        self._total = total
        self._started = time.monotonic()
        self._shown = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self._shown < PROGRESS_INTERVAL_S and done != self._total:
            return
        self._shown = now
        rate = done / max(now - self._started, 1e-9)
        line = f"{done:,} records  {rate:,.0f}/s"
        if self._total:
            eta = (self._total - done) / rate if rate else 0.0
            line = f"{done:,}/{self._total:,} records  {rate:,.0f}/s  ETA {eta:.0f}s"
        self._stream.write(f"\r{line:<60}")
        self._stream.flush()

    def close(self) -> None:
        self._stream.write("\n")
        self._stream.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream produce",
        description="Produce SMS to STREAM_TOPIC (creating the topics first). Kafka settings "
        "come from STREAM_* environment variables.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--file", metavar="PATH", help="JSON-lines file, one record value per line ('-': stdin)"
    )
    source.add_argument("--count", type=int, metavar="N", help="generate N synthetic SMS")
    parser.add_argument(
        "--raw", action="store_true", help="with --file: send lines that are not JSON objects too"
    )
    parser.add_argument("--seed", type=int, help="with --count: seed for a repeatable run")
    parser.add_argument(
        "--malformed", type=int, default=0, metavar="M", help="with --count: add M bad records"
    )
    parser.add_argument(
        "--duplicates", type=int, default=0, metavar="D", help="with --count: re-send D SMS"
    )
    parser.add_argument("--rate", type=float, metavar="R", help="records per second (default: max)")
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.file is not None and (args.seed is not None or args.malformed or args.duplicates):
        parser.error("--seed, --malformed and --duplicates go with --count, not --file")
    if args.count is not None and args.raw:
        parser.error("--raw goes with --file")
    if min(args.count or 0, args.malformed, args.duplicates) < 0:
        parser.error("--count, --malformed and --duplicates must not be negative")
    if args.duplicates and not args.count:
        parser.error("--duplicates needs --count of at least 1")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    return run_tool(PROG, lambda settings: _produce(settings, args))


async def _produce(settings: Settings, args: argparse.Namespace) -> int:
    """`stream produce` once the arguments are checked; a bad input line ends it with
    EXIT_FAILED, saying how many records before it were acknowledged."""
    total: int | None = None
    with ExitStack() as files:
        if args.count is not None:
            total = args.count + args.malformed + args.duplicates
            records = synthetic_records(
                random.Random(args.seed),  # noqa: S311 - test data, not secrets
                count=args.count,
                malformed=args.malformed,
                duplicates=args.duplicates,
                max_sms_bytes=settings.max_sms_bytes,
            )
        elif args.file == "-":
            records = file_records(sys.stdin.buffer, name="<stdin>", raw=args.raw)
        else:
            handle = files.enter_context(open(args.file, "rb"))  # noqa: ASYNC230 - read lazily, line by line
            records = file_records(handle, name=args.file, raw=args.raw)
        bar = _Progress(sys.stderr, total) if sys.stderr.isatty() else None
        if bar is not None:
            files.callback(bar.close)
        acked = 0

        def progress(count: int) -> None:
            nonlocal acked
            acked = count
            if bar is not None:
                bar(count)

        await ensure_topics(settings.replace(create_topic=True))
        started = time.monotonic()
        try:
            count = await produce_records(settings, records, rate=args.rate, progress=progress)
        except StreamError as exc:
            fail(PROG, f"{exc}; stopped after {acked} record(s) sent to {settings.topic}")
            return EXIT_FAILED
        seconds = time.monotonic() - started
    print(
        f"produced {count} records to {settings.topic} in {seconds:.2f}s "
        f"({count / max(seconds, 1e-9):,.0f} records/s)"
    )
    return EXIT_OK
