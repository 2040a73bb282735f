"""Kafka record value -> validated `Sms`, or a `PermanentError` saying exactly what is wrong.

Decoding is the first stage so that nothing malformed reaches a processor: a bad record is
dead-lettered with the reason and never blocks its partition.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from stream.errors import PermanentError
from stream.sms.models import Sms

__all__ = ["MAX_ID_CHARS", "decode_sms"]

MAX_ID_CHARS = 256
"""An id is a key, not a payload; longer ones are almost certainly a producer bug."""

_REQUIRED = ("id", "sender", "body", "received_at")
_KNOWN = frozenset((*_REQUIRED, "recipient", "meta"))


def _invalid(field: str, problem: str) -> PermanentError:
    return PermanentError(f"field {field!r} {problem}", reason="invalid_field")


def _storable_keys(value: Any) -> Any:
    """Rename keys MongoDB-wire servers refuse (a leading `$`, a `.`) in free-form fields."""
    if isinstance(value, dict):
        return {
            ("_" + k[1:] if k.startswith("$") else k).replace(".", "_"): _storable_keys(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_storable_keys(v) for v in value]
    return value


def decode_sms(value: bytes | None, max_bytes: int) -> Sms:
    """Decode and validate one record value; raise PermanentError (never anything else)."""
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
    sms_id, sender, body, received = obj["id"], obj["sender"], obj["body"], obj["received_at"]
    if not isinstance(sms_id, str) or not sms_id or len(sms_id) > MAX_ID_CHARS:
        raise _invalid("id", f"must be a non-empty string of at most {MAX_ID_CHARS} characters")
    if not isinstance(sender, str) or not sender:
        raise _invalid("sender", "must be a non-empty string")
    if not isinstance(body, str):
        raise _invalid("body", "must be a string")
    if "\x00" in sms_id or "\x00" in sender or "\x00" in body:
        raise _invalid("id/sender/body", "must not contain NUL characters")
    if not isinstance(received, str):
        raise _invalid("received_at", "must be an ISO-8601 string")
    try:
        received_at = datetime.fromisoformat(received)
    except ValueError:
        raise _invalid("received_at", f"{received[:40]!r} is not ISO-8601") from None
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    recipient = obj.get("recipient")
    if recipient is not None and not isinstance(recipient, str):
        raise _invalid("recipient", "must be a string when present")
    meta = obj.get("meta")
    if meta is not None:
        if not isinstance(meta, dict):
            raise _invalid("meta", "must be an object when present")
        meta = _storable_keys(meta)
    extra = _storable_keys({k: v for k, v in obj.items() if k not in _KNOWN})
    return Sms(
        id=sms_id,
        sender=sender,
        body=body,
        received_at=received_at,
        recipient=recipient,
        meta=meta,
        extra=extra,
    )
