"""Publishing failed SMS to retry topics and the dead-letter topic.

The original key and value bytes are published unchanged; what happened travels in headers,
so a DLQ record can be inspected and replayed byte for byte. A record counts as settled
only when Kafka acknowledged it (`acks=all`, idempotent producer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "ATTEMPT",
    "ERROR_CLASS",
    "ERROR_MESSAGE",
    "FIRST_FAILED_AT",
    "NOT_BEFORE",
    "ORIGINAL_OFFSET",
    "ORIGINAL_PARTITION",
    "ORIGINAL_TOPIC",
    "Delivery",
    "Headers",
    "header",
]

ORIGINAL_TOPIC = "stream.original.topic"
ORIGINAL_PARTITION = "stream.original.partition"
ORIGINAL_OFFSET = "stream.original.offset"
ATTEMPT = "stream.attempt"
ERROR_CLASS = "stream.error.class"
ERROR_MESSAGE = "stream.error.message"
FIRST_FAILED_AT = "stream.first-failed-at"
NOT_BEFORE = "stream.not-before"

MAX_ERROR_MESSAGE_CHARS = 512
"""Headers ride with every record; a stack-trace-sized message would bloat the topic."""

Headers = Sequence[tuple[str, bytes]]


def header(headers: Headers | None, name: str) -> str | None:
    """The value of one of our headers, decoded, or None."""
    for key, value in headers or ():
        if key == name:
            return value.decode("utf-8", "replace")
    return None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One record to publish: where to, the original bytes, and why."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @classmethod
    def failed(
        cls,
        *,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        origin: tuple[str, int, int],
        first_failed_at: str | None,
        attempt: int,
        error_class: str,
        error_message: str,
        not_before: datetime | None = None,
    ) -> Delivery:
        """Headers for a record that failed `attempt` times; `origin` is its main-topic place."""
        now = datetime.now(UTC).isoformat()
        headers = [
            (ORIGINAL_TOPIC, origin[0].encode()),
            (ORIGINAL_PARTITION, str(origin[1]).encode()),
            (ORIGINAL_OFFSET, str(origin[2]).encode()),
            (ATTEMPT, str(attempt).encode()),
            (ERROR_CLASS, error_class.encode()),
            (ERROR_MESSAGE, error_message[:MAX_ERROR_MESSAGE_CHARS].encode()),
            (FIRST_FAILED_AT, (first_failed_at or now).encode()),
        ]
        if not_before is not None:
            headers.append((NOT_BEFORE, not_before.isoformat().encode()))
        return cls(topic=topic, key=key, value=value, headers=headers)
