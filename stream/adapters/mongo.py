"""MongoDB sink: one idempotent bulk write per micro-batch, retried until durable.

Delivery is at least once, so the write is keyed by the SMS id (`_id`) and is an insert
if absent: an unordered `insert_many` whose duplicate-key errors (code 11000) mean "already
stored". That is an upsert with `$setOnInsert` semantics (the first stored processing of an
SMS wins), chosen over per-document `ReplaceOne(upsert=True)` because it is one batched
insert on every server: on FerretDB/SQLite it measured 8,300 docs/s against 34 for upserts.

Every failure is classified, none crashes the member:

    connection error, timeout, or a code in TRANSIENT_CODES  -> retry the batch (backoff)
    write concern error (e.g. 64 wtimeout)                   -> retry the batch (backoff)
    per-document write error, code in DOCUMENT_CODES          -> DocumentRejected (`unstorable`)
    per-document write error, other code                     -> retried UNCLASSIFIED_ATTEMPTS
                                                                times, then DocumentRejected
    a document BSON cannot encode (InvalidDocument, Overflow) -> that one DocumentRejected
    auth errors (13, 18)                                     -> retry the batch (backoff), log
    any other command error                                  -> the documents one at a time;
                                                                one alone that keeps failing
                                                                UNCLASSIFIED_ATTEMPTS times
                                                                -> DocumentRejected

Retries go on for as long as it takes: the caller does not settle (so does not commit) until
`write` returns, the consumer pauses meanwhile, and shutdown bounds it by cancelling. Every
single attempt is bounded (server selection, socket and write-concern timeouts), so a
half-open connection costs one timeout, not a hang. An outage is logged when it starts,
every LOG_EVERY_S while it lasts, and when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import bson
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)
from pymongo.uri_parser import parse_uri
from pymongo.write_concern import WriteConcern

from stream.engine.ports import DocumentRejected, WriteOutcome
from stream.observability import metrics
from stream.sms.codec import BSON_MAX_BYTES

__all__ = ["DOCUMENT_CODES", "TRANSIENT_CODES", "MongoSink"]

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

DUPLICATE_KEY_CODES = frozenset((11000, 11001, 12582))
"""Already stored (insert-if-absent), across server versions."""
TRANSIENT_CODES = frozenset(
    (
        6,  # HostUnreachable
        7,  # HostNotFound
        50,  # MaxTimeMSExpired
        64,  # WriteConcernFailed (wtimeout)
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        112,  # WriteConflict
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10058,  # LegacyNotPrimary
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    )
)
"""The retryable-writes spec's codes (as in pymongo's helpers) plus WriteConflict, MaxTimeMS
and WriteConcernFailed: the server or the cluster, not the document, failed."""
DOCUMENT_CODES = frozenset(
    (
        2,  # BadValue (FerretDB: nested arrays, Infinity, a `$` key)
        14,  # TypeMismatch
        15,  # Overflow (nested too deep)
        22,  # InvalidBSON
        52,  # DollarPrefixedFieldName
        53,  # InvalidIdField
        55,  # InvalidDBRef
        56,  # EmptyFieldName
        57,  # DottedFieldName
        121,  # DocumentValidationFailure (a collection validator)
        10334,  # BSONObjectTooLarge
        17280,  # KeyTooLong (index key over 1 KiB, servers before 4.2)
    )
)
"""Codes that say this document can never be stored as it is."""

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
_UNSUPPORTED_OPTION_CODES = frozenset((2, 67, 197, 238))
"""BadValue, CannotCreateIndex, InvalidIndexSpecificationOption, NotImplemented."""


CONFIGURATION_CODES = frozenset((13, 18))
"""Unauthorized, AuthenticationFailed: every write fails alike until an operator fixes the
credentials; retried (readiness false), never blamed on a document."""


def _code(exc: PyMongoError) -> int | None:
    return exc.code if isinstance(exc, OperationFailure) else None


def _is_transient(exc: PyMongoError) -> bool:
    return (
        isinstance(exc, (ConnectionFailure, WriteConcernError))
        or exc.has_error_label("RetryableWriteError")
        or _code(exc) in TRANSIENT_CODES
    )


def _unencodable(document: dict[str, Any], max_bytes: int) -> str | None:
    """Why BSON cannot carry `document` to the server, or None if it can."""
    try:
        size = len(bson.encode(document))
    except (bson.InvalidDocument, OverflowError, ValueError, RecursionError) as exc:
        return f"not BSON-encodable: {type(exc).__name__}: {exc}"
    if size > max_bytes:
        return f"document is {size} bytes, over the server's {max_bytes}"
    return None


class MongoSink:
    """Writes processed SMS documents to `<db>.<collection>`."""

    def __init__(
        self,
        url: str,
        database: str,
        collection: str,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`sleep` and `clock` pace the retries and the outage log; tests inject their own."""
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
        self._sleep = sleep
        self._clock = clock
        self._failing_since: float | None = None
        self._last_logged = 0.0
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
                    if exc.code not in _UNSUPPORTED_OPTION_CODES:
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
        stored or rejected (see the module docstring); raises only CancelledError. After
        per-document errors the rest are written again (duplicates are harmless), because some
        servers (FerretDB) may stop a bulk at the first failing document.
        """
        if not documents:
            return WriteOutcome(0, [])
        inserted = 0
        rejected: list[DocumentRejected] = []
        remaining = list(enumerate(documents))
        unclassified: dict[int, int] = {}
        delay = BACKOFF_FIRST_S
        started = time.perf_counter()
        while remaining:
            failure: PyMongoError | None = None
            try:
                await self._collection.insert_many([d for _, d in remaining], ordered=False)
            except BulkWriteError as exc:
                inserted += exc.details.get("nInserted", 0)
                retry, refused = self._split(exc.details, remaining, unclassified)
                rejected += refused
                if exc.details.get("writeConcernErrors") or retry:
                    failure = exc
                elif not refused:
                    break  # only duplicates: everything is stored
                failed = {r.index for r in refused}
                remaining = [item for item in remaining if item[0] not in failed]
            except (bson.InvalidDocument, OverflowError, ValueError, RecursionError) as exc:
                refused = self._isolate(remaining, exc)
                rejected += refused
                failed = {r.index for r in refused}
                remaining = [item for item in remaining if item[0] not in failed]
            except OperationFailure as exc:
                if _is_transient(exc) or exc.code in CONFIGURATION_CODES:
                    failure = exc
                elif len(remaining) > 1:
                    # A command error may be one document's doing (FerretDB fails a whole
                    # insert with code 1 for some documents): find it one at a time.
                    for index, document in remaining:
                        alone = await self.write([document])
                        inserted += alone.inserted
                        rejected += [DocumentRejected(index, r.message) for r in alone.rejected]
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
            if failure is not None:
                self._failed(failure, delay)
                await self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
        self._recovered()
        metrics.MONGO_WRITE.observe(time.perf_counter() - started)
        return WriteOutcome(inserted, rejected)

    def _split(
        self,
        details: Mapping[str, Any],
        remaining: list[tuple[int, dict[str, Any]]],
        unclassified: dict[int, int],
    ) -> tuple[bool, list[DocumentRejected]]:
        """Classify a bulk's write errors: (any to retry?, documents rejected for good)."""
        retry = False
        refused: list[DocumentRejected] = []
        for error in details.get("writeErrors", []):
            code = error.get("code")
            original = remaining[error["index"]][0]
            message = f"code {code}: {error.get('errmsg', '')}"
            if code in DUPLICATE_KEY_CODES:
                continue
            if code in TRANSIENT_CODES:
                retry = True
            elif code in DOCUMENT_CODES:
                refused.append(DocumentRejected(original, message))
            else:
                unclassified[original] = unclassified.get(original, 0) + 1
                if unclassified[original] >= UNCLASSIFIED_ATTEMPTS:
                    refused.append(DocumentRejected(original, message))
                else:
                    retry = True
        return retry, refused

    def _isolate(
        self, remaining: list[tuple[int, dict[str, Any]]], exc: Exception
    ) -> list[DocumentRejected]:
        """The documents BSON cannot carry, found one by one after a failed bulk encode.

        Raises `exc` again if none is at fault: then it was no document's doing (a bug).
        """
        refused = [
            DocumentRejected(index, reason)
            for index, document in remaining
            if (reason := _unencodable(document, BSON_MAX_BYTES)) is not None
        ]
        if not refused:
            raise exc
        return refused

    def _failed(self, exc: PyMongoError, delay: float) -> None:
        """Mark unhealthy and log the failure: its first time, then every LOG_EVERY_S."""
        self.healthy = False
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._last_logged < LOG_EVERY_S:
            return
        self._last_logged = now
        kind = "unavailable" if _is_transient(exc) else "refused the write"
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
                self._clock() - self._failing_since,
            )
            self._failing_since = None
        self.healthy = True
