"""The document stored for one processed SMS: the one definition of its shape.

Built by the engine for every result it writes, and by the bench's peer jobs and the codec
property test, so all of them store the same fields under the same names.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from stream.sms.models import Sms

__all__ = ["stored_document"]


def stored_document(
    sms: Sms,
    parsed: dict[str, Any],
    *,
    processor: str,
    processed_at: datetime,
    attempts: int,
    topic: str,
    partition: int,
    offset: int,
) -> dict[str, Any]:
    """The SMS with its parse result, who parsed it when, after how many attempts, and the
    record it came from.

    `_id` is the SMS id, so storing a redelivered SMS again is a duplicate key. Unknown
    top-level fields (`sms.extra`) come first, so a known field always wins over one
    (the codec escapes an unknown field that would collide).
    """
    return {
        **sms.extra,
        "_id": sms.id,
        "sender": sms.sender,
        "body": sms.body,
        "received_at": sms.received_at,
        "recipient": sms.recipient,
        "meta": sms.meta,
        "parsed": parsed,
        "processor": processor,
        "processed_at": processed_at,
        "attempts": attempts,
        "source": {"topic": topic, "partition": partition, "offset": offset},
    }
