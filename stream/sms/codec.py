"""Kafka record value -> validated `Sms`, or a `PermanentError` saying exactly what is wrong.

Decoding is the first stage so that nothing malformed reaches a processor: a bad record is
dead-lettered with the reason and never blocks its partition. The boundary is drawn here,
in one place: every value either decodes into an `Sms` whose stored document (built by
`engine/batch.py`) BSON can encode and every supported server (MongoDB, FerretDB) accepts,
or raises `PermanentError`. What is stored and what is dead-lettered:

- JSON itself (orjson): no NaN/Infinity (a number beyond a double is invalid JSON), no
  lone surrogates, at most 1024 levels of nesting; everything else is `invalid_json`.
- `received_at`: ISO-8601; naive means UTC; converted to UTC here, so an offset that moves
  it out of years 1..9999 (`0001-01-01T00:00:00+01:00`) is `invalid_field`, not a crash.
- `meta` and unknown top-level fields are free-form. They are copied by an iterative walk
  (no recursion, so no RecursionError at any depth) that rejects as `unstorable_field`:
  integers outside signed 64 bits (BSON's widest), and nesting deeper than
  `MAX_NESTING` levels (MongoDB stores at most 100 per document; deeper is a producer bug).
- Keys are rewritten, not rejected, with an escape that cannot collide: `%`, `.`, a leading
  `$`, NUL and the other control characters become `%25`, `%2E`, `%24`, `%00`..`%1F`, `%7F`
  (percent-encoding, so `urllib.parse.unquote` gives the original key back). FerretDB/SQLite
  fails the insert of a top-level key with a control character, or stores it and then cannot
  read the collection back; MongoDB refuses NUL. `{"$": 4, ".": 5}` is stored as
  `{"%24": 4, "%2E": 5}`. An unknown top-level field named like a field the sink document
  sets itself (`_id`, `parsed`, `source`, ...) is kept as `<name>%`: no escaped key ends in a
  bare `%`, so that too is collision-free.
- Size: a value of at most `UNCHECKED_SIZE_BYTES` always fits BSON's 16 MiB (BSON is at
  most `BSON_GROWTH` x the JSON, plus the parse result); a larger one is encoded once here
  and rejected as `oversize` if its document could not fit.
- Left to the server: FerretDB refuses arrays directly inside arrays (`[[1]]`), which
  MongoDB stores. The sink dead-letters such a document as `unstorable` (the server's own
  reason), so a record is never refused on a server that would have taken it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import bson
import orjson

from stream.errors import PermanentError
from stream.sms.models import Sms

__all__ = [
    "BSON_MAX_BYTES",
    "MAX_ID_CHARS",
    "MAX_NESTING",
    "MAX_SENDER_CHARS",
    "RESERVED_FIELDS",
    "decode_sms",
    "storable_key",
]

MAX_ID_CHARS = 256
"""An id is a key, not a payload; longer ones are almost certainly a producer bug."""
MAX_SENDER_CHARS = 256
"""A sender is an address (MSISDN, short code, alphanumeric id) and an index key: keep it small."""
MAX_NESTING = 32
"""Levels of objects/arrays inside `meta` or an unknown field: far above real metadata, far
below MongoDB's 100 levels per document."""
BSON_MAX_BYTES = 16 * 1024 * 1024
"""MongoDB's (and FerretDB's) maximum document size."""
BSON_GROWTH = 8
"""BSON is at most ~7x its JSON (`[0,0,...]`: 2 JSON bytes, 1 + index key + 4 BSON bytes)."""
DOCUMENT_HEADROOM_BYTES = 256 * 1024
"""Room the sink document needs beyond the record's own fields (parse result, source, dates)."""
UNCHECKED_SIZE_BYTES = (BSON_MAX_BYTES - DOCUMENT_HEADROOM_BYTES) // BSON_GROWTH
"""Values up to this size cannot make a document over BSON_MAX_BYTES, so skip the exact check."""
MAX_PATH_CHARS = 120
"""An error names the offending path up to this length: enough to find it, small in a header."""
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

RESERVED_FIELDS = frozenset(
    (
        "_id",
        "sender",
        "body",
        "received_at",
        "recipient",
        "meta",
        "parsed",
        "processor",
        "processed_at",
        "attempts",
        "source",
    )
)
"""Top-level fields of the stored document (`stream.sms.document`; tests/test_document.py
holds the two in step)."""

_UNSTORABLE_KEY_CHARS = re.compile(r"^\$|[%.\x00-\x1f\x7f]")
"""Escaped in keys: a leading `$` and `.` (MongoDB), NUL (BSON), control characters (FerretDB
writes them into its JSON unescaped), and `%` itself (so the escape is reversible)."""

_REQUIRED = ("id", "sender", "body", "received_at")
_KNOWN = frozenset((*_REQUIRED, "recipient", "meta"))


def _invalid(field: str, problem: str) -> PermanentError:
    return PermanentError(f"field {field!r} {problem}", reason="invalid_field")


def _unstorable(path: str, problem: str) -> PermanentError:
    where = path if len(path) <= MAX_PATH_CHARS else path[: MAX_PATH_CHARS - 3] + "..."
    return PermanentError(f"{where} {problem}", reason="unstorable_field")


def _escape(match: re.Match[str]) -> str:
    return f"%{ord(match.group()):02X}"


def storable_key(key: str) -> str:
    """`key` percent-encoded where servers refuse it (see the module docstring); injective."""
    return _UNSTORABLE_KEY_CHARS.sub(_escape, key)


_PLAIN = frozenset((str, float, bool, type(None)))
"""JSON scalars BSON always holds (orjson gives no NaN, Infinity or lone surrogates)."""


_Path = str | tuple["_Path", object]
"""Where a value sits: the field's name, or (parent, key); formatted only for an error."""


def _dotted(path: _Path) -> str:
    keys: list[str] = []
    while isinstance(path, tuple):
        path, key = path
        keys.append(str(key))
    return ".".join([path, *reversed(keys)])


def _out_of_range(path: _Path, value: int) -> PermanentError:
    return _unstorable(_dotted(path), f"holds {value}, outside BSON's signed 64-bit integers")


def _check(value: Any, path: str) -> bool:
    """Raise PermanentError unless BSON holds `value`; return whether a key needs escaping.

    Iterative (an explicit stack), so any depth orjson accepts is checked, never recursed
    into; `path` names the field, and the error the first offending place in it.
    """
    kind = type(value)
    if kind is int and not _INT64_MIN <= value <= _INT64_MAX:
        raise _out_of_range(path, value)
    if kind is not dict and kind is not list:
        return False
    escape = False
    stack: list[tuple[dict[str, Any] | list[Any], _Path, int]] = [(value, path, 1)]
    while stack:
        node, where, depth = stack.pop()
        if type(node) is dict:
            items: Iterable[tuple[object, Any]] = node.items()
            if not escape:
                for name in node:
                    if "%" in name or "." in name or name[:1] == "$" or not name.isprintable():
                        escape = True
                        break
        else:
            items = enumerate(node)
        for key, item in items:
            kind = type(item)
            if kind in _PLAIN:
                continue
            if kind is int:
                if not _INT64_MIN <= item <= _INT64_MAX:
                    raise _out_of_range((where, key), item)
            elif depth >= MAX_NESTING:
                raise _unstorable(_dotted((where, key)), f"nests deeper than {MAX_NESTING} levels")
            else:
                stack.append((item, (where, key), depth + 1))
    return escape


def _escaped(value: Any) -> Any:
    """A copy of `value` with every key escaped; recursion is safe: `_check` bounded the depth."""
    if isinstance(value, dict):
        return {storable_key(key): _escaped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    return value


def _storable(value: Any, path: str) -> Any:
    """`value` as stored: itself when BSON holds it as is, else a copy with escaped keys."""
    return _escaped(value) if _check(value, path) else value


def _received_at(received: object) -> datetime:
    """The ISO-8601 `received_at` as an aware UTC datetime (naive means UTC)."""
    if not isinstance(received, str):
        raise _invalid("received_at", "must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(received)
    except ValueError:
        raise _invalid("received_at", f"{received[:40]!r} is not ISO-8601") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise _invalid("received_at", f"{received[:40]!r} is outside years 1-9999 in UTC") from None


def _check_size(sms: Sms) -> None:
    """Reject an SMS whose document could exceed BSON_MAX_BYTES (only called for big values)."""
    size = len(
        bson.encode(
            {
                "i": sms.id,
                "s": sms.sender,
                "b": sms.body,
                "r": sms.recipient,
                "m": sms.meta,
                "e": sms.extra,
            }
        )
    )
    if size > BSON_MAX_BYTES - DOCUMENT_HEADROOM_BYTES:
        raise PermanentError(
            f"stored document would be over {size} bytes, MongoDB's limit is {BSON_MAX_BYTES}",
            reason="oversize",
        )


def decode_sms(value: bytes | None, max_bytes: int) -> Sms:
    """Decode and validate one record value; raise PermanentError (never anything else).

    Called by the batch handler on every record; see the module docstring for the boundary.
    """
    if value is None:
        raise PermanentError("record has no value (a tombstone?)", reason="empty")
    if len(value) > max_bytes:
        raise PermanentError(f"value is {len(value)} bytes, over {max_bytes}", reason="oversize")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as utf8_exc:
            raise PermanentError(f"value is not UTF-8: {utf8_exc}", reason="invalid_utf8") from None
        raise PermanentError(f"value is not JSON: {exc}", reason="invalid_json") from None
    if not isinstance(obj, dict):
        raise PermanentError(
            f"value is a JSON {type(obj).__name__}, not an object", reason="invalid_json"
        )
    for field in _REQUIRED:
        if field not in obj:
            raise PermanentError(f"required field {field!r} is missing", reason="missing_field")
    sms_id, sender, body = obj["id"], obj["sender"], obj["body"]
    if not isinstance(sms_id, str) or not sms_id or len(sms_id) > MAX_ID_CHARS:
        raise _invalid("id", f"must be a non-empty string of at most {MAX_ID_CHARS} characters")
    if not isinstance(sender, str) or not sender or len(sender) > MAX_SENDER_CHARS:
        raise _invalid(
            "sender", f"must be a non-empty string of at most {MAX_SENDER_CHARS} characters"
        )
    if not isinstance(body, str):
        raise _invalid("body", "must be a string")
    if "\x00" in sms_id or "\x00" in sender or "\x00" in body:
        raise _invalid("id/sender/body", "must not contain NUL characters")
    received_at = _received_at(obj["received_at"])
    recipient = obj.get("recipient")
    if recipient is not None and not isinstance(recipient, str):
        raise _invalid("recipient", "must be a string when present")
    meta = obj.get("meta")
    if meta is not None:
        if not isinstance(meta, dict):
            raise _invalid("meta", "must be an object when present")
        meta = _storable(meta, "meta")
    extra: dict[str, Any] = {}
    for key, item in obj.items():
        if key not in _KNOWN:
            stored = storable_key(key)
            extra[stored + "%" if stored in RESERVED_FIELDS else stored] = _storable(
                item, f"field {stored!r}"
            )
    sms = Sms(
        id=sms_id,
        sender=sender,
        body=body,
        received_at=received_at,
        recipient=recipient,
        meta=meta,
        extra=extra,
    )
    if len(value) > UNCHECKED_SIZE_BYTES:
        _check_size(sms)
    return sms
