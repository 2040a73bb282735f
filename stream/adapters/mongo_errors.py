"""What a MongoDB error says, for the sink: the server, the document, or the configuration.

The codes are MongoDB server error codes; `stream.adapters.mongo` says what the sink does
with each class.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import bson
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError, WriteConcernError

from stream.engine.ports import DocumentRejected

__all__ = [
    "CONFIGURATION_CODES",
    "DOCUMENT_CODES",
    "DUPLICATE_KEY_CODES",
    "DUPLICATE_KEY_REASON",
    "ID_INDEX",
    "SERVER_CODES",
    "TRANSIENT_CODES",
    "UNSUPPORTED_OPTION_CODES",
    "duplicate_index",
    "duplicate_rejection",
    "error_code",
    "is_transient",
    "unencodable",
]

DUPLICATE_KEY_CODES = frozenset((11000, 11001, 12582))
"""A unique index holds the key already, across server versions: on `_id`, already stored."""
ID_INDEX = "_id_"
DUPLICATE_KEY_REASON = "duplicate_key"
_INDEX_IN_MESSAGE = re.compile(r"index: (\S+)")
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
SERVER_CODES = frozenset(
    (
        24,  # LockTimeout
        46,  # LockBusy
        14031,  # OutOfDiskSpace
    )
)
"""Codes that say the server cannot write anything now, whatever the document (no probe:
a duplicate-key probe may pass on a full disk); bounded by `halt_after_s`, unlike transient
ones, as each needs an operator."""

UNSUPPORTED_OPTION_CODES = frozenset((2, 67, 197, 238))
"""BadValue, CannotCreateIndex, InvalidIndexSpecificationOption, NotImplemented."""


CONFIGURATION_CODES = frozenset((13, 18))
"""Unauthorized, AuthenticationFailed: every write fails alike until an operator fixes the
credentials; retried (readiness false), never blamed on a document."""


def error_code(exc: PyMongoError) -> int | None:
    return exc.code if isinstance(exc, OperationFailure) else None


def is_transient(exc: PyMongoError) -> bool:
    return (
        isinstance(exc, (ConnectionFailure, WriteConcernError))
        or exc.has_error_label("RetryableWriteError")
        or error_code(exc) in TRANSIENT_CODES
    )


def duplicate_index(error: Mapping[str, Any]) -> str | None:
    """The unique index a duplicate-key write error is on, None when the server does not say
    (MongoDB gives `keyPattern` and names it in `errmsg`; FerretDB does neither)."""
    pattern = error.get("keyPattern")
    match = _INDEX_IN_MESSAGE.search(str(error.get("errmsg", "")))
    if isinstance(pattern, Mapping) and pattern:
        if list(pattern) == ["_id"]:
            return ID_INDEX
        keys = ", ".join(map(str, pattern))
        return f"{match.group(1)} ({keys})" if match is not None else f"on ({keys})"
    return None if match is None else match.group(1)


def unencodable(document: dict[str, Any], max_bytes: int) -> str | None:
    """Why BSON cannot carry `document` to the server, or None if it can."""
    try:
        size = len(bson.encode(document))
    except (bson.InvalidDocument, OverflowError, ValueError, RecursionError) as exc:
        return f"not BSON-encodable: {type(exc).__name__}: {exc}"
    if size > max_bytes:
        return f"document is {size} bytes, over the server's {max_bytes}"
    return None


def duplicate_rejection(index: int, unique_index: str, message: str) -> DocumentRejected:
    return DocumentRejected(
        index, f"duplicate key on unique index {unique_index}: {message}", DUPLICATE_KEY_REASON
    )
