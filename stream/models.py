"""The records that flow between stages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Sms"]


@dataclass(frozen=True, slots=True)
class Sms:
    """One validated SMS, as decoded from a Kafka record value.

    `raw` keeps the decoded JSON object so the stored document holds every original field,
    including optional ones this version does not know about.
    """

    id: str
    sender: str
    body: str
    received_at: datetime
    recipient: str | None
    meta: dict[str, Any] | None
    raw: dict[str, Any]
