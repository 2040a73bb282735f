"""Record values the codec must dead-letter: one of each way a producer can get one wrong."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

__all__ = ["DEFAULT_MAX_SMS_BYTES", "malformed_records"]


DEFAULT_MAX_SMS_BYTES = 65536
"""STREAM_MAX_SMS_BYTES's default: the oversize malformed record is just over it."""


_MISSING = object()  # a field value meaning "leave this field out"


def _bad_record(rng: random.Random, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": f"bad-{uuid.UUID(int=rng.getrandbits(128), version=4)}",
        "sender": rng.choice(("VM-HDFCBK", "MPESA", "+254712345678", "GTBank")),
        "body": rng.choice(("Rs 500 debited from A/c XX1234", "Your OTP is 123456", "hi")),
        "received_at": "2024-03-12T10:15:00Z",
    }
    record.update(fields)
    return {key: value for key, value in record.items() if value is not _MISSING}


def _malformed(rng: random.Random, kind: int, max_bytes: int) -> bytes:
    dumps = json.dumps
    if kind == 0:  # invalid JSON: the producer was cut off mid-value
        text = dumps(_bad_record(rng))
        return text[: rng.randint(10, len(text) - 2)].encode()
    if kind == 1:  # invalid UTF-8: the body was encoded as Latin-1
        return dumps(_bad_record(rng, body="Café payment of £5"), ensure_ascii=False).encode(
            "latin-1"
        )
    if kind == 2:
        return dumps(_bad_record(rng, id=_MISSING)).encode()
    if kind == 3:
        body = rng.choice((12345, None, ["Rs 500"], {"text": "Rs 500"}))
        return dumps(_bad_record(rng, body=body)).encode()
    if kind == 4:
        when = rng.choice(("yesterday 5pm", "12/03/2024 14:22", "1710238500", ""))
        return dumps(_bad_record(rng, received_at=when)).encode()
    if kind == 5:  # oversize: valid JSON, just over the byte limit
        return dumps(_bad_record(rng, body="x" * (max_bytes + rng.randint(1, 1024)))).encode()
    if kind == 6:
        return dumps([_bad_record(rng)]).encode()  # valid JSON, not an object
    return dumps(_bad_record(rng, sender="")).encode()


_MALFORMED_KINDS = 8


def malformed_records(
    rng: random.Random, count: int, *, max_bytes: int = DEFAULT_MAX_SMS_BYTES
) -> list[bytes]:
    """`count` Kafka record values the codec must dead-letter, cycling through 8 kinds.

    In order: invalid JSON, invalid UTF-8, no "id", a "body" that is not a string, a
    "received_at" that is not ISO-8601, a value over `max_bytes`, a JSON array, an empty
    "sender". `count >= 8` gives at least one of each.
    """
    return [_malformed(rng, kind % _MALFORMED_KINDS, max_bytes) for kind in range(count)]
