"""The records that flow between stages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stream.errors import ProcessingError

__all__ = ["Outcome", "Sms"]


@dataclass(frozen=True, slots=True)
class Sms:
    """One validated SMS, as decoded from a Kafka record value.

    `received_at` is aware and in UTC. `meta` and `extra` (top-level fields this version
    does not know about) hold only what BSON can encode, with keys escaped so that every
    original field is stored under a distinct name (rules in `stream.sms.codec`).
    """

    id: str
    sender: str
    body: str
    received_at: datetime
    recipient: str | None
    meta: dict[str, Any] | None
    extra: dict[str, Any]


Outcome = dict[str, Any] | ProcessingError
"""What processing one SMS gave: the parse result, or the error it met (returned, not raised)."""
