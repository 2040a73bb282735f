"""MongoDB sink: one idempotent bulk write per micro-batch, retried until durable.

Delivery is at least once, so the write is keyed by the SMS id (`_id`) and is an insert
if absent: an unordered `insert_many` whose duplicate-key errors (code 11000) mean "already
stored". That is an upsert with `$setOnInsert` semantics (the first stored processing of an
SMS wins), chosen over per-document `ReplaceOne(upsert=True)` because it is one batched
insert on every server: on FerretDB/SQLite it measured 8,300 docs/s against 34 for upserts.
While MongoDB is unreachable the write backs off and retries; the caller does not settle
(so does not commit) until it returns, and the consumer pauses fetching meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, ConnectionFailure, PyMongoError
from pymongo.write_concern import WriteConcern

from stream.engine.ports import DocumentRejected, WriteOutcome
from stream.observability import metrics

__all__ = ["MongoSink"]

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
"""Retry a failed write soon (blips are common), but poll a down server only every few s."""

SERVER_SELECTION_TIMEOUT_MS = 5000
"""How long one write waits for a server before the backoff loop takes over."""


DUPLICATE_KEY = 11000


def _is_transient(exc: PyMongoError) -> bool:
    return isinstance(exc, ConnectionFailure) or exc.has_error_label("RetryableWriteError")


class MongoSink:
    """Writes processed SMS documents to `<db>.<collection>`."""

    def __init__(self, url: str, database: str, collection: str) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url, serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS, appname="stream"
        )
        self._collection: AsyncCollection[dict[str, Any]] = self._client[database].get_collection(
            collection, write_concern=WriteConcern(w="majority", j=True)
        )
        self.healthy = True

    async def aclose(self) -> None:
        await self._client.close()

    async def ping(self) -> bool:
        """Readiness probe: does the server answer right now?"""
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            self.healthy = False
        else:
            self.healthy = True
        return self.healthy

    async def write(self, documents: Sequence[dict[str, Any]]) -> WriteOutcome:
        """Insert every document not stored yet; count the new ones, return the refused ones.

        Retries transient failures with capped exponential backoff for as long as it takes;
        the caller bounds that by cancelling (shutdown). After per-document errors the
        remaining documents are written again (duplicates are harmless), because some
        servers (FerretDB) may stop a bulk at the first failing document.
        """
        if not documents:
            return WriteOutcome(0, [])
        inserted = 0
        rejected: list[DocumentRejected] = []
        remaining = list(enumerate(documents))
        delay = BACKOFF_FIRST_S
        started = time.perf_counter()
        while remaining:
            try:
                await self._collection.insert_many([d for _, d in remaining], ordered=False)
            except BulkWriteError as exc:
                inserted += exc.details.get("nInserted", 0)
                refused = [
                    e for e in exc.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY
                ]
                if exc.details.get("writeConcernErrors"):
                    log.warning("mongo write concern not met, retrying: %s", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX_S)
                    continue
                if not refused:
                    break
                failed = {error["index"] for error in refused}
                rejected += [
                    DocumentRejected(remaining[e["index"]][0], str(e.get("errmsg", "")))
                    for e in refused
                ]
                remaining = [item for i, item in enumerate(remaining) if i not in failed]
            except PyMongoError as exc:
                if not _is_transient(exc):
                    raise
                self.healthy = False
                log.warning("mongo unavailable, retrying in %.1fs: %s", delay, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
            else:
                inserted += len(remaining)
                break
        self.healthy = True
        metrics.MONGO_WRITE.observe(time.perf_counter() - started)
        return WriteOutcome(inserted, rejected)
