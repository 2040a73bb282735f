"""MongoDB sink: one idempotent bulk write per micro-batch, retried until durable.

Delivery is at least once, so the write is keyed by the SMS id (`_id`) and is an insert
if absent: an unordered `insert_many` whose duplicate-key errors (code 11000) mean "already
stored". That is an upsert with `$setOnInsert` semantics (the first stored processing of an
SMS wins), chosen over per-document `ReplaceOne(upsert=True)` because it is one batched
insert on every server: on FerretDB/SQLite it measured 8,300 docs/s against 34 for upserts.

Every failure is classified (the codes in `mongo_errors`), none crashes the member:

    connection error, timeout, or a code in TRANSIENT_CODES  -> retry the batch (backoff)
    write concern error (e.g. 64 wtimeout)                   -> retry the batch (backoff)
    duplicate key on `_id`                                   -> already stored
    duplicate key on another unique index                    -> DocumentRejected (`duplicate_key`,
                                                                naming the index)
    duplicate key, index not named (FerretDB)                -> the ids are looked up: stored
                                                                ones are, the others as above
    per-document write error, code in DOCUMENT_CODES          -> DocumentRejected (`unstorable`)
    a document BSON cannot encode (InvalidDocument, Overflow) -> that one DocumentRejected
    auth errors (13, 18)                                     -> retry the batch (backoff), log
    a code in SERVER_CODES, or any other error that a probe
    write of a known-good document meets too: the server's   -> retry the batch (backoff);
                                                                past `halt_after_s` of this,
                                                                SystemicError (the engine halts)
    any other error (the probe passes): a document's         -> per document (a command error:
                                                                one at a time); one that keeps
                                                                failing UNCLASSIFIED_ATTEMPTS
                                                                times -> DocumentRejected

An error is the server's only when a known-good document fails the same way: documents that
differ can share a defect (FerretDB fails each document with bad JSON with one message), and
a batch of one could not tell at all. The probe re-inserts a document already stored (a
healthy server answers "duplicate key"); into an empty collection it inserts and deletes one.

Retries go on for as long as it takes (a server's refusal: until `halt_after_s`): the caller
does not settle (so does not commit) until `write` returns, the consumer pauses meanwhile,
and shutdown bounds it by cancelling. Every single attempt is bounded (server selection,
socket and write-concern timeouts), so a half-open connection costs one timeout, not a hang.
An outage is logged when it starts, every LOG_EVERY_S while it lasts, and when it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import bson
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)
from pymongo.uri_parser import parse_uri
from pymongo.write_concern import WriteConcern

from stream.adapters.mongo_errors import (
    CONFIGURATION_CODES,
    DOCUMENT_CODES,
    DUPLICATE_KEY_CODES,
    ID_INDEX,
    SERVER_CODES,
    TRANSIENT_CODES,
    UNSUPPORTED_OPTION_CODES,
    duplicate_index,
    duplicate_rejection,
    error_code,
    is_transient,
    unencodable,
)
from stream.clock import Clock, SystemClock
from stream.config import Settings
from stream.engine.ports import DocumentRejected, WriteOutcome
from stream.errors import SystemicError
from stream.observability import metrics
from stream.sms.codec import BSON_MAX_BYTES

__all__ = ["MongoSink"]

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
"""Retry a failed write soon (blips are common), but poll a down server only every few s."""
SERVER_SELECTION_TIMEOUT_MS = 5000
"""How long one write waits for a server before the backoff loop takes over."""
CONNECT_TIMEOUT_MS = 5000
"""A TCP + TLS handshake to a live server takes milliseconds; 5 s means it is not there."""
SOCKET_TIMEOUT_MS = 30_000
"""A bulk of the largest batch takes well under 1 s on FerretDB/SQLite; a reply 30 s late
means a half-open connection, which this turns into a retry."""
WTIMEOUT_MS = 10_000
"""Majority + journal acknowledgement takes milliseconds on a healthy replica set."""
LOG_EVERY_S = 30.0
"""While MongoDB keeps failing, one log line per 30 s (plus the first and the recovery)."""
UNCLASSIFIED_ATTEMPTS = 5
"""A per-document error with a code we don't know: retried this often (a blip would clear),
then dead-lettered (a document the server keeps refusing must not hold the batch forever)."""

REFUSED_REASON = "mongo_refused"
"""The halt's reason when the server refuses every write past the bound."""
PROBE_ID = "stream-write-probe"
"""`_id` of the document a probe inserts and deletes when the collection is empty."""
INDEXES = (
    IndexModel([("sender", ASCENDING), ("received_at", DESCENDING)], name="sender_received_at"),
    IndexModel(
        [("parsed.category", ASCENDING), ("received_at", DESCENDING)],
        name="category_received_at",
    ),
)
"""A reader's SMS of one sender, or of one category, newest first (docs/guarantees.md)."""
_ACCOUNT_KEYS = [("parsed.account_tail", ASCENDING), ("received_at", DESCENDING)]
TRANSACTIONS_INDEX = IndexModel(
    _ACCOUNT_KEYS,
    name="transactions_account_received_at",
    partialFilterExpression={"parsed.category": "transaction"},
)
"""Transactions of one account, newest first; partial: only transactions carry the key."""
ACCOUNT_INDEX = IndexModel(_ACCOUNT_KEYS, name="account_received_at")
"""The same, for servers without `partialFilterExpression` (FerretDB v1)."""


class MongoSink:
    """Writes processed SMS documents to `<db>.<collection>`."""

    def __init__(
        self,
        url: str,
        database: str,
        collection: str,
        *,
        halt_after_s: float = Settings.mongo_halt_after_s,
        clock: Clock | None = None,
    ) -> None:
        """`halt_after_s` bounds a server-wide refusal before `write` raises SystemicError;
        `clock` paces the retries and the outage log; tests inject their own."""
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
            connectTimeoutMS=CONNECT_TIMEOUT_MS,
            socketTimeoutMS=SOCKET_TIMEOUT_MS,
            appname="stream",
        )
        self._collection: AsyncCollection[dict[str, Any]] = self._client[database].get_collection(
            collection, write_concern=WriteConcern(w="majority", j=True, wtimeout=WTIMEOUT_MS)
        )
        self._hosts = ",".join(f"{host}:{port}" for host, port in parse_uri(url)["nodelist"])
        self._halt_after_s = halt_after_s
        self._clock = clock or SystemClock()
        self._failing_since: float | None = None
        self._last_logged = 0.0
        self._reachable = True
        self._failing_writes = 0
        self._refusing_since: float | None = None

    @property
    def healthy(self) -> bool:
        """Readiness: the server answered the last ping, no write is failing, and the
        server is not refusing writes (a ping alone passes while it refuses them)."""
        return self._reachable and self._failing_writes == 0 and self._refusing_since is None

    async def aclose(self) -> None:
        await self._client.close()

    async def ping(self) -> bool:
        """Readiness probe: does the server answer right now?"""
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            self._reachable = False
        else:
            self._reachable = True
        return self.healthy

    async def probe(self) -> SystemicError | None:
        """While halted: does a write of a known-good document still fail?"""
        error = await self._probe_write()
        if error is None:
            self._refusing_since = None
            self._recovered()
            return None
        return SystemicError(
            f"mongo at {self._hosts} refuses writes: {type(error).__name__}: {str(error)[:300]}",
            reason=REFUSED_REASON,
        )

    async def ensure_indexes(self) -> bool:
        """Create the readers' indexes that are missing; True when all exist. Called at start-up.

        Idempotent, and safe with N members at once: creating an index that exists with the
        same spec is a no-op on the server. One index per command, only those not listed yet
        (FerretDB v1 drops the connection on a multi-index createIndexes of existing ones). A
        server without partial indexes gets the plain compound one instead. Never raises for
        a server error: it logs and returns False (queries scan until the next start), so
        start-up waits at most one round of bounded commands.
        """
        try:
            existing = {index["name"] async for index in await self._collection.list_indexes()}
            for index in INDEXES:
                if index.document["name"] not in existing:
                    await self._collection.create_indexes([index])
            if not existing & {TRANSACTIONS_INDEX.document["name"], ACCOUNT_INDEX.document["name"]}:
                try:
                    await self._collection.create_indexes([TRANSACTIONS_INDEX])
                except OperationFailure as exc:
                    if exc.code not in UNSUPPORTED_OPTION_CODES:
                        raise
                    log.info("partial indexes not supported (code %s): plain index", exc.code)
                    await self._collection.create_indexes([ACCOUNT_INDEX])
        except PyMongoError as exc:
            log.warning(
                "mongo at %s: indexes not ensured, queries will scan: %s: %s",
                self._hosts,
                type(exc).__name__,
                exc,
            )
            return False
        return True

    async def write(self, documents: Sequence[dict[str, Any]]) -> WriteOutcome:
        """Insert every document not stored yet; count the new ones, return the refused ones.

        Called by the batch handler once per micro-batch. Returns only when every document is
        stored or rejected (see the module docstring); raises only CancelledError, or
        SystemicError once the server has refused every write for `halt_after_s`. When a
        bulk's errors and inserts do not account for every document (a server may stop a
        bulk at the first failing one) the rest are written again (duplicates are harmless).
        """
        if not documents:
            return WriteOutcome(0, [])
        inserted = 0
        rejected: list[DocumentRejected] = []
        remaining = list(enumerate(documents))
        unclassified: dict[int, int] = {}
        delay = BACKOFF_FIRST_S
        started = time.perf_counter()
        failing = False
        try:
            while remaining:
                failure: PyMongoError | None = None
                try:
                    await self._collection.insert_many([d for _, d in remaining], ordered=False)
                except BulkWriteError as exc:
                    inserted += exc.details.get("nInserted", 0)
                    try:
                        refused, failure = await self._bulk_errors(exc, remaining, unclassified)
                    except PyMongoError as lookup:  # the ids or the probe: try again
                        refused, failure = [], lookup
                    rejected += refused
                    attempted = exc.details.get("nInserted", 0) + len(
                        exc.details.get("writeErrors", [])
                    )
                    if failure is None and attempted == len(remaining):
                        break  # every document stored, already stored or refused
                    failed = {r.index for r in refused}
                    remaining = [item for item in remaining if item[0] not in failed]
                except (bson.InvalidDocument, OverflowError, ValueError, RecursionError) as exc:
                    refused = self._isolate(remaining, exc)
                    rejected += refused
                    failed = {r.index for r in refused}
                    remaining = [item for item in remaining if item[0] not in failed]
                except OperationFailure as exc:
                    if (
                        is_transient(exc)
                        or exc.code in CONFIGURATION_CODES
                        or await self._server_refuses(exc.code)
                    ):
                        failure = exc
                    elif len(remaining) > 1:
                        # A command error may be one document's doing (FerretDB fails a whole
                        # insert with code 1 for some documents): find it one at a time.
                        for index, document in remaining:
                            alone = await self.write([document])
                            inserted += alone.inserted
                            rejected += [
                                DocumentRejected(index, r.message, r.reason) for r in alone.rejected
                            ]
                        break
                    else:
                        index = remaining[0][0]
                        unclassified[index] = unclassified.get(index, 0) + 1
                        if unclassified[index] >= UNCLASSIFIED_ATTEMPTS:
                            rejected.append(DocumentRejected(index, f"code {exc.code}: {exc}"))
                            break
                        failure = exc
                except PyMongoError as exc:
                    failure = exc
                else:
                    inserted += len(remaining)
                    break
                if failure is None:
                    continue
                if not failing:
                    failing = True
                    self._failing_writes += 1
                self._failed(failure, delay)
                self._halt_if_refusing_too_long(failure)
                await self._clock.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
        finally:
            if failing:
                self._failing_writes -= 1
        self._refusing_since = None
        self._recovered()
        metrics.MONGO_WRITE.observe(time.perf_counter() - started)
        return WriteOutcome(inserted, rejected)

    async def _bulk_errors(
        self,
        exc: BulkWriteError,
        remaining: list[tuple[int, dict[str, Any]]],
        unclassified: dict[int, int],
    ) -> tuple[list[DocumentRejected], PyMongoError | None]:
        """Classify a bulk's write errors: the documents refused for good, and the error to
        retry the rest for (None: nothing to retry). Raises when a lookup fails."""
        retry = bool(exc.details.get("writeConcernErrors"))
        refused: list[DocumentRejected] = []
        unnamed: dict[Any, int] = {}
        suspects: list[tuple[int, int | None, str]] = []
        for error in exc.details.get("writeErrors", []):
            code = error.get("code")
            original, document = remaining[error["index"]]
            message = f"code {code}: {error.get('errmsg', '')}"
            if code in DUPLICATE_KEY_CODES:
                index = duplicate_index(error)
                if index is None:
                    unnamed[document["_id"]] = original
                elif index != ID_INDEX:
                    refused.append(duplicate_rejection(original, index, message))
            elif code in TRANSIENT_CODES:
                retry = True
            elif code in DOCUMENT_CODES:
                refused.append(DocumentRejected(original, message))
            else:
                suspects.append((original, code, message))
        if unnamed:
            refused += await self._unstored(unnamed)
        if suspects and await self._server_refuses(suspects[0][1]):
            retry = True
        else:
            for original, _, message in suspects:
                unclassified[original] = unclassified.get(original, 0) + 1
                if unclassified[original] >= UNCLASSIFIED_ATTEMPTS:
                    refused.append(DocumentRejected(original, message))
                else:
                    retry = True
        return refused, exc if retry else None

    async def _unstored(self, duplicates: dict[Any, int]) -> list[DocumentRejected]:
        """Of the documents refused as duplicates on an unnamed index (`_id` -> position),
        those whose id is not stored: they clash on another unique index."""
        ids = list(duplicates)
        stored = {
            document["_id"]
            async for document in self._collection.find({"_id": {"$in": ids}}, {"_id": 1})
        }
        missing = [i for i in ids if i not in stored]
        if not missing:
            return []
        unique = [
            index["name"]
            async for index in await self._collection.list_indexes()
            if index.get("unique") and index["name"] != ID_INDEX
        ]
        name = " or ".join(unique) or "(unnamed)"
        message = "the server did not name the index, and the id is not stored"
        return [duplicate_rejection(duplicates[i], name, message) for i in missing]

    async def _server_refuses(self, code: int | None) -> bool:
        """Whether an error with `code` is the server's (see the module docstring); the
        first time it is, the refusal's start is noted for the halt bound."""
        if code not in SERVER_CODES:
            self._failing_writes += 1  # not ready while it tells (FerretDB's lock: 20 s)
            try:
                error = await self._probe_write()
            finally:
                self._failing_writes -= 1
            if error is None or not (error_code(error) == code or is_transient(error)):
                return False
        if self._refusing_since is None:
            self._refusing_since = self._clock.monotonic()
        return True

    async def _probe_write(self) -> PyMongoError | None:
        """Write a known-good document; the error it meets, None when the server took it."""
        try:
            known = await self._collection.find_one({})
            if known is None:
                await self._collection.insert_one({"_id": PROBE_ID})
                await self._collection.delete_one({"_id": PROBE_ID})
            else:
                await self._collection.insert_one(known)
        except DuplicateKeyError:
            return None
        except PyMongoError as exc:
            return exc
        return None

    def _halt_if_refusing_too_long(self, failure: PyMongoError) -> None:
        since = self._refusing_since
        if since is None or self._clock.monotonic() - since < self._halt_after_s:
            return
        refused_for = self._clock.monotonic() - since
        raise SystemicError(
            f"mongo at {self._hosts} has refused every write for {refused_for:.0f}s "
            f"with an error that is the server's, not a document's: "
            f"{type(failure).__name__}: {str(failure)[:300]}",
            reason=REFUSED_REASON,
        )

    def _isolate(
        self, remaining: list[tuple[int, dict[str, Any]]], exc: Exception
    ) -> list[DocumentRejected]:
        """The documents BSON cannot carry, found one by one after a failed bulk encode.

        Raises `exc` again if none is at fault: then it was no document's doing (a bug).
        """
        refused = [
            DocumentRejected(index, reason)
            for index, document in remaining
            if (reason := unencodable(document, BSON_MAX_BYTES)) is not None
        ]
        if not refused:
            raise exc
        return refused

    def _failed(self, exc: PyMongoError, delay: float) -> None:
        """Log the failure: its first time, then every LOG_EVERY_S."""
        now = self._clock.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._last_logged < LOG_EVERY_S:
            return
        self._last_logged = now
        kind = "unavailable" if is_transient(exc) else "refused the write"
        log.warning(
            "mongo at %s %s for %.0fs, retrying in %.1fs: %s: %s",
            self._hosts,
            kind,
            now - self._failing_since,
            delay,
            type(exc).__name__,
            str(exc)[:300],
        )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.warning(
                "mongo at %s writes again after %.1fs",
                self._hosts,
                self._clock.monotonic() - self._failing_since,
            )
            self._failing_since = None
