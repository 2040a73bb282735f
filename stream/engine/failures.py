"""The retry/DLQ record format, and the policy that says where a failed SMS goes.

This module is the only owner of the format: `Failure.to_headers` writes it, and
`Failure.from_headers` reads it back (the batch, the loop and `stream dlq` all call it), so
writers and readers cannot disagree. A retry or DLQ record keeps the original key and value
bytes and every header the original producer set; what happened travels in `stream.*`
headers:

    stream.original.topic / .partition / .offset   where the SMS first entered
    stream.attempt                                 processing attempts so far
    stream.error.class / stream.error.message      why the last attempt failed
    stream.first-failed-at                         ISO-8601, the first failure
    stream.not-before                              ISO-8601, on retry topics only
    stream.replayed-from                           `dlq:<partition>:<offset>`, after a replay
    stream.value-omitted                           the original value's size, when the copy
                                                   had to drop it to fit the producer's limit
    stream.value-null                              `true` when the original had neither key
                                                   nor value (a producer may write that; a
                                                   copy needs one, so it gets an empty value)

Every Kafka-legal header is carried: a header value may be null (it stays null in the copy,
and a `stream.*` one reads as absent).

`route` is a pure function: error, origin, level, delays, now -> retry level or DLQ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from stream.errors import ProcessingError, TransientError

__all__ = [
    "ATTEMPT",
    "ERROR_CLASS",
    "ERROR_MESSAGE",
    "FIRST_FAILED_AT",
    "NOT_BEFORE",
    "ORIGINAL_OFFSET",
    "ORIGINAL_PARTITION",
    "ORIGINAL_TOPIC",
    "OUR_HEADER_PREFIX",
    "REPLAYED_FROM",
    "VALUE_NULL",
    "VALUE_OMITTED",
    "Delivery",
    "Failure",
    "Headers",
    "Origin",
    "Route",
    "foreign_headers",
    "header",
    "origin_of",
    "route",
]

OUR_HEADER_PREFIX = "stream."
ORIGINAL_TOPIC = "stream.original.topic"
ORIGINAL_PARTITION = "stream.original.partition"
ORIGINAL_OFFSET = "stream.original.offset"
ATTEMPT = "stream.attempt"
ERROR_CLASS = "stream.error.class"
ERROR_MESSAGE = "stream.error.message"
FIRST_FAILED_AT = "stream.first-failed-at"
NOT_BEFORE = "stream.not-before"
REPLAYED_FROM = "stream.replayed-from"
VALUE_OMITTED = "stream.value-omitted"
VALUE_NULL = "stream.value-null"

MAX_ERROR_MESSAGE_CHARS = 512
"""Headers ride with every record; a stack-trace-sized message would bloat the topic."""

Headers = Sequence[tuple[str, bytes | None]]


def header(headers: Headers | None, name: str) -> str | None:
    """The value of one header, decoded; None when absent or null."""
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return None


def foreign_headers(headers: Headers | None) -> list[tuple[str, bytes | None]]:
    """The headers the original producer set (everything not `stream.*`), in order."""
    return [(k, v) for k, v in headers or () if not k.startswith(OUR_HEADER_PREFIX)]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an SMS first entered, and how many attempts it had before this one."""

    topic: str
    partition: int
    offset: int
    previous_attempts: int = 0
    first_failed_at: datetime | None = None
    replayed_from: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """What the `stream.*` headers of a retry or DLQ record say."""

    origin: Origin
    attempt: int
    error_class: str
    error_message: str
    first_failed_at: datetime
    not_before: datetime | None = None
    value_omitted: int | None = None

    def to_headers(self) -> list[tuple[str, bytes | None]]:
        origin = self.origin
        headers: list[tuple[str, bytes | None]] = [
            (ORIGINAL_TOPIC, origin.topic.encode()),
            (ORIGINAL_PARTITION, str(origin.partition).encode()),
            (ORIGINAL_OFFSET, str(origin.offset).encode()),
            (ATTEMPT, str(self.attempt).encode()),
            (ERROR_CLASS, self.error_class.encode()),
            (ERROR_MESSAGE, self.error_message[:MAX_ERROR_MESSAGE_CHARS].encode()),
            (FIRST_FAILED_AT, self.first_failed_at.isoformat().encode()),
        ]
        if self.not_before is not None:
            headers.append((NOT_BEFORE, self.not_before.isoformat().encode()))
        if origin.replayed_from is not None:
            headers.append((REPLAYED_FROM, origin.replayed_from.encode()))
        if self.value_omitted is not None:
            headers.append((VALUE_OMITTED, str(self.value_omitted).encode()))
        return headers

    @classmethod
    def from_headers(cls, headers: Headers | None) -> Failure | None:
        """The failure a record's headers describe; None when they describe none (a fresh
        record) or are unreadable (then the record is treated as fresh, never dropped)."""
        values = {
            k: v.decode("utf-8", "replace")
            for k, v in headers or ()
            if k.startswith(OUR_HEADER_PREFIX) and v is not None
        }
        try:
            origin = Origin(
                topic=values[ORIGINAL_TOPIC],
                partition=int(values[ORIGINAL_PARTITION]),
                offset=int(values[ORIGINAL_OFFSET]),
                previous_attempts=int(values[ATTEMPT]),
                first_failed_at=_instant(values[FIRST_FAILED_AT]),
                replayed_from=values.get(REPLAYED_FROM),
            )
            not_before = values.get(NOT_BEFORE)
            omitted = values.get(VALUE_OMITTED)
            return cls(
                origin=origin,
                attempt=origin.previous_attempts,
                error_class=values.get(ERROR_CLASS, ""),
                error_message=values.get(ERROR_MESSAGE, ""),
                first_failed_at=_instant(values[FIRST_FAILED_AT]),
                not_before=None if not_before is None else _instant(not_before),
                value_omitted=None if omitted is None else int(omitted),
            )
        except (KeyError, ValueError):
            return None


def _instant(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def origin_of(topic: str, partition: int, offset: int, headers: Headers | None) -> Origin:
    """Where a fetched record's SMS first entered: its headers' origin, or the record."""
    if not headers:  # most records: nothing to parse
        return Origin(topic, partition, offset)
    failure = Failure.from_headers(headers)
    if failure is None:
        return Origin(topic, partition, offset)
    return failure.origin


@dataclass(frozen=True, slots=True)
class Route:
    """Where one failed SMS goes: a retry topic (level 1..N, with not-before) or the DLQ."""

    attempt: int
    retry_level: int | None
    not_before: datetime | None

    @property
    def dead(self) -> bool:
        return self.retry_level is None


def route(
    error: ProcessingError,
    origin: Origin,
    from_level: int,
    delays_s: Sequence[float],
    now: datetime,
) -> Route:
    """The policy: a transient error goes one retry level up, anything else to the DLQ.

    `from_level` is the retry level the record was fetched from (0: the main topic), so a
    replayed record climbs the ladder again while its attempt count goes on. Every record of
    a level waits that level's own delay, so not-before times grow with offsets and the head
    of a retry partition is always the first one due. A Retry-After longer than the next
    level's delay skips to the first level whose delay covers it, instead of holding back
    the records behind it; past the last level's delay the last level is used.
    """
    attempt = origin.previous_attempts + 1
    level = from_level + 1
    if not isinstance(error, TransientError) or level > len(delays_s):
        return Route(attempt, None, None)
    wanted = error.retry_after or 0.0
    while level < len(delays_s) and delays_s[level - 1] < wanted:
        level += 1
    return Route(attempt, level, now + timedelta(seconds=delays_s[level - 1]))


@dataclass(frozen=True, slots=True)
class Delivery:
    """One record to publish: where to, the original bytes, and every header."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    @classmethod
    def failed(
        cls,
        *,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        original_headers: Headers | None,
        failure: Failure,
    ) -> Delivery:
        """The copy of a failed record: its own headers first, then the failure's. A record
        with neither key nor value is copied with an empty value and `stream.value-null`
        (a record needs one of them), which a replay turns back into the null."""
        headers = [*foreign_headers(original_headers), *failure.to_headers()]
        if key is None and value is None:
            return cls(topic, key, b"", [*headers, (VALUE_NULL, b"true")])
        return cls(topic, key, value, headers)

    def size(self) -> int:
        """Bytes the producer counts for this record, near enough to compare with its limit."""
        return (
            len(self.key or b"")
            + len(self.value or b"")
            + sum(len(k) + len(v or b"") for k, v in self.headers)
        )

    def without_value(self, *, keep_foreign_headers: bool = True) -> Delivery:
        """The same record with an empty value and the drop said in a header, so a copy
        that cannot fit the producer's request limit still reaches its topic (and, when even
        that is too large, without the original producer's headers). Empty, not None: a
        record needs a key or a value, and None would read as a tombstone."""
        failure = Failure.from_headers(self.headers)
        kept = foreign_headers(self.headers) if keep_foreign_headers else []
        omitted = len(self.value) if self.value else None
        was_null = [(VALUE_NULL, b"true")] if header(self.headers, VALUE_NULL) else []
        if failure is None:
            note = [] if omitted is None else [(VALUE_OMITTED, str(omitted).encode())]
            return Delivery(self.topic, self.key, b"", [*kept, *note, *was_null])
        if omitted is not None:
            failure = replace(failure, value_omitted=omitted)
        return Delivery(self.topic, self.key, b"", [*kept, *failure.to_headers(), *was_null])
