"""query: the readers' queries with and without their indexes, and what the indexes cost writes.

1,000,000 stored SMS documents (10,000 on FerretDB, see FERRETDB_DOCUMENTS), shaped as
`stream run` writes them (sender, received_at, parsed.category, parsed.account_tail, ...),
are generated directly, not through Kafka: the figure is about the collection, not the
pipeline. Each repeat writes the same documents twice through
`MongoSink.write` in batches of `BATCH`: into a collection without the readers' indexes, and
into one where `MongoSink.ensure_indexes()` ran first; the write ratio is indexed / plain
documents per second (generating the documents is not timed). Then each query of the
docs/guarantees.md ("The stored document") runs `QUERIES_EACH` times with different parameters on
both collections (same answers checked); the speed-up is the plain collection's median time
over the indexed one's. Whether the server used the index is read from `explain` (FerretDB
v1 with SQLite pushes no filter down, so there indexes cost writes and speed up nothing).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.figures import Figure, ScenarioResult, ratios
from bench.harness import BenchError, Context
from stream.adapters.mongo import MongoSink
from stream.sms.parser import CATEGORIES

__all__ = ["QUERIES", "run"]

BATCH = 1000
"""STREAM_BATCH_MAX's default order of magnitude: writes as `stream run` makes them."""
QUERIES_EACH = 15
"""Runs of each query (different sender/category/account each): enough for a median."""
FERRETDB_DOCUMENTS = 10_000
FERRETDB_QUERIES_EACH = 5
"""FerretDB/SQLite scans ~0.6 ms per document and uses no index: 1M would take hours."""
LIMIT = 50
"""A reader's page of SMS, newest first."""
SENDERS = 2000
ACCOUNTS = 500
SPAN = timedelta(days=90)
START = datetime(2026, 1, 1, tzinfo=UTC)

Doc = dict[str, Any]
Query = Callable[[random.Random], Doc]


def _document(rng: random.Random, n: int) -> Doc:
    category = rng.choices(CATEGORIES, weights=(40, 20, 15, 5, 15, 5))[0]
    when = START + SPAN * rng.random()
    transaction = category == "transaction"
    return {
        "_id": f"sms-{n}",
        "sender": f"+2547{rng.randrange(SENDERS):08d}",
        "body": f"Confirmed. Ksh{rng.randrange(10, 50_000):,}.00 sent on {when:%d/%m/%y}. " * 2,
        "received_at": when,
        "recipient": None,
        "meta": {"gateway": rng.choice("abc")},
        "parsed": {
            "schema_version": 1,
            "category": category,
            "direction": "debit" if transaction else None,
            "amount": float(rng.randrange(10, 50_000)) if transaction else None,
            "account_tail": f"{rng.randrange(ACCOUNTS):04d}" if transaction else None,
        },
        "processor": "builtin",
        "processed_at": when,
        "attempts": 1,
        "source": {"topic": "sms", "partition": n % 6, "offset": n},
    }


def _batches(count: int) -> Iterator[list[Doc]]:
    """The same `count` documents on every call, `BATCH` at a time (1M at once would not fit)."""
    rng = random.Random(1)
    for first in range(0, count, BATCH):
        yield [_document(rng, n) for n in range(first, min(first + BATCH, count))]


def _by_sender(rng: random.Random) -> Doc:
    return {"sender": f"+2547{rng.randrange(SENDERS):08d}"}


def _by_category(rng: random.Random) -> Doc:
    since = START + SPAN * rng.random()
    window = {"$gte": since, "$lt": since + timedelta(days=1)}
    return {"parsed.category": rng.choice(CATEGORIES), "received_at": window}


def _transactions(rng: random.Random) -> Doc:
    return {
        "parsed.category": "transaction",
        "parsed.account_tail": f"{rng.randrange(ACCOUNTS):04d}",
    }


QUERIES: dict[str, Query] = {
    "sender, newest first": _by_sender,
    "category in a day, newest first": _by_category,
    "transactions of an account, newest first": _transactions,
}


async def _write(ctx: Context, collection: str, count: int, indexed: bool) -> float:
    """Documents per second written through MongoSink (after ensure_indexes if `indexed`)."""
    sink = MongoSink(ctx.endpoints.mongo_url, ctx.db, collection)
    try:
        if indexed and not await sink.ensure_indexes():
            raise BenchError(f"query: indexes on {collection} not created")
        busy = 0.0
        for batch in _batches(count):
            started = time.perf_counter()
            outcome = await sink.write(batch)
            busy += time.perf_counter() - started
            if outcome.inserted != len(batch):
                raise BenchError(f"query: {len(batch) - outcome.inserted} documents not stored")
        return count / busy
    finally:
        await sink.aclose()


async def _query(ctx: Context, collection: str, query: Doc) -> tuple[float, list[Any]]:
    """(seconds, ids of the page) for one query."""
    coll = ctx.mongo[ctx.db][collection]
    started = time.perf_counter()
    cursor = coll.find(query, {"_id": 1}).sort("received_at", -1).limit(LIMIT)
    ids = [doc["_id"] async for doc in cursor]
    return time.perf_counter() - started, ids


async def _uses_index(ctx: Context, collection: str, query: Doc) -> bool:
    plan = await ctx.mongo[ctx.db][collection].find(query).sort("received_at", -1).explain()
    return "IXSCAN" in str(plan)


async def _one(ctx: Context, count: int, runs: int, seed: int) -> dict[str, Any]:
    plain, indexed = ctx.name("query-plain"), ctx.name("query-indexed")
    result: dict[str, Any] = {
        "plain_docs_s": await _write(ctx, plain, count, indexed=False),
        "indexed_docs_s": await _write(ctx, indexed, count, indexed=True),
    }
    for label, make in QUERIES.items():
        rng = random.Random(seed)
        times: dict[str, list[float]] = {"plain": [], "indexed": []}
        for _ in range(runs):
            query = make(rng)
            plain_s, plain_ids = await _query(ctx, plain, query)
            indexed_s, indexed_ids = await _query(ctx, indexed, query)
            if plain_ids != indexed_ids:
                raise BenchError(f"query {label!r}: answers differ with and without index")
            times["plain"].append(plain_s)
            times["indexed"].append(indexed_s)
        result[label] = {
            "plain_s": statistics.median(times["plain"]),
            "indexed_s": statistics.median(times["indexed"]),
            "index_used": await _uses_index(ctx, indexed, query),
        }
    await ctx.drop(plain)
    await ctx.drop(indexed)
    return result


async def run(ctx: Context) -> ScenarioResult:
    server = await ctx.mongo_server()
    if server.startswith("FerretDB"):
        count, each = ctx.size(FERRETDB_DOCUMENTS, 2_000), ctx.size(FERRETDB_QUERIES_EACH, 3)
    else:
        count, each = ctx.size(1_000_000, 5_000), ctx.size(QUERIES_EACH, 3)
    runs = [await _one(ctx, count, each, seed=i + 1) for i in range(ctx.repeats)]
    figures = [
        Figure(
            f"{label}: without / with index",
            "x",
            ratios([r[label]["plain_s"] for r in runs], [r[label]["indexed_s"] for r in runs]),
            note="index used" if all(r[label]["index_used"] for r in runs) else "index NOT used",
        )
        for label in QUERIES
    ]
    figures.append(
        Figure(
            "write rate with / without indexes",
            "x",
            ratios([r["indexed_docs_s"] for r in runs], [r["plain_docs_s"] for r in runs]),
            note=f"MongoSink.write, batches of {BATCH}",
        )
    )
    figures.append(
        Figure("write rate without indexes", "docs/s", [r["plain_docs_s"] for r in runs])
    )
    notes = [
        f"{count:,} stored SMS documents ({SENDERS:,} senders, {ACCOUNTS} account tails, "
        f"{SPAN.days} days), written twice per repeat (plain, then indexed); each query "
        f"{each}x with different parameters, limit {LIMIT}, newest first; medians. "
        f"'index used' is read from explain (IXSCAN). Server: {server}.",
    ]
    params = {"documents": count, "batch": BATCH, "queries_each": each, "server": server}
    return ScenarioResult("query", params, figures, notes, {"runs": runs})
