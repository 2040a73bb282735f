"""MongoDB sink: one idempotent bulk upsert per micro-batch, retried until durable.

Delivery is at least once, so the write is an upsert keyed by the SMS id (`_id`): a
redelivered SMS replaces its own document instead of adding a second one. While MongoDB is
unreachable the write backs off and retries; the caller does not settle (so does not
commit) until it returns, and the consumer pauses fetching meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from pymongo import AsyncMongoClient, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, ConnectionFailure, PyMongoError
from pymongo.write_concern import WriteConcern

from stream import metrics

__all__ = ["DocumentRejected", "MongoSink"]

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
"""Retry a failed write soon (blips are common), but poll a down server only every few s."""

SERVER_SELECTION_TIMEOUT_MS = 5000
"""How long one write waits for a server before the backoff loop takes over."""


class DocumentRejected:
    """A document the server refused for good (e.g. an unstorable field): goes to the DLQ."""

    __slots__ = ("index", "message")

    def __init__(self, index: int, message: str) -> None:
        self.index = index
        self.message = message


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

    async def write(self, documents: Sequence[dict[str, Any]]) -> list[DocumentRejected]:
        """Upsert every document (keyed by `_id`) and return those rejected for good.

        Retries transient failures with capped exponential backoff for as long as it takes;
        the caller bounds that by cancelling (shutdown). Documents the server refuses one by
        one are returned, and the rest are written again without them, because some servers
        (FerretDB) abort the remainder of a bulk at the first failing document.
        """
        rejected: list[DocumentRejected] = []
        remaining = list(enumerate(documents))
        delay = BACKOFF_FIRST_S
        while remaining:
            started = time.perf_counter()
            try:
                await self._collection.bulk_write(
                    [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for _, d in remaining],
                    ordered=False,
                )
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if not errors:
                    log.warning("mongo write concern not met, retrying: %s", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX_S)
                    continue
                failed = {error["index"] for error in errors}
                rejected += [
                    DocumentRejected(remaining[error["index"]][0], str(error.get("errmsg", "")))
                    for error in errors
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
                self.healthy = True
                metrics.MONGO_WRITE.observe(time.perf_counter() - started)
                return rejected
        return rejected
