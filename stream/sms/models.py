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

    `extra` keeps top-level fields this version does not know about, with keys made
    storable, so the stored document still holds every original field.
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
