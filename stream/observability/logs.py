"""Logging on stdout: JSON lines for shippers, plain text for people, and masking.

One event per line. The event is a fixed sentence; values go in structured fields
(`extra=`), e.g. `log.info("partitions assigned", extra={"partitions": partitions_field(tps)})`,
so a shipper needs no parsing rules and a reader gets no Python reprs. JSON when stdout is
not a terminal, text when it is (`STREAM_LOG_FORMAT` overrides).

SMS bodies are never logged; phone numbers and sender ids only through `mask`, which keeps
the last digits an operator needs to correlate a complaint.

Library noise is cut where it says nothing an operator acts on: aiokafka logs errors it
retries itself at ERROR, e.g. `GroupCoordinatorNotAvailableError` while a new group's
coordinator is elected. Those (its errors flagged `retriable`) are lowered to DEBUG during
`STARTUP_GRACE_S` and to WARNING after it; aiokafka's other errors stay ERROR.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol, TextIO

import orjson

__all__ = [
    "STARTUP_GRACE_S",
    "JsonFormatter",
    "RetriableKafkaErrors",
    "TextFormatter",
    "configure",
    "mask",
    "partitions_field",
]

KEEP_LAST = 3

STARTUP_GRACE_S = 30.0
"""A healthy start elects a new group's coordinator and new topics' leaders within seconds;
aiokafka's retried errors before then are expected, not news."""

REPEAT_WINDOW_S = 30.0
"""A library's same line (an outage's reconnect attempts) is said twice a minute at most."""

_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime"}
"""Attributes every LogRecord has; anything else on a record came in through `extra=`."""


class _TopicPartition(Protocol):
    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...


def mask(value: str) -> str:
    """`+254712345678` -> `**********678`: enough to correlate, not enough to identify."""
    if len(value) <= KEEP_LAST:
        return "*" * len(value)
    return "*" * (len(value) - KEEP_LAST) + value[-KEEP_LAST:]


def partitions_field(tps: Iterable[_TopicPartition]) -> list[str]:
    """Partitions as a log field: `["sms.inbound:0", "sms.inbound:1", ...]`, in order."""
    return [f"{t}:{p}" for t, p in sorted((tp.topic, tp.partition) for tp in tps)]


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """The `extra=` fields of a record, in the order they were given."""
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, event, every `extra=` field, error."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        line |= _fields(record)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """`09:46:48.373 INFO  stream.app  started  topic=sms.inbound partitions=[...]`."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).astimezone()
        parts = [
            ts.strftime("%H:%M:%S.") + f"{ts.microsecond // 1000:03d}",
            f"{record.levelname:<7}",
            record.name,
            record.getMessage(),
        ]
        parts += [f"{k}={_text_value(v)}" for k, v in _fields(record).items()]
        text = "  ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _text_value(value: object) -> str:
    if isinstance(value, str):
        return value if value and " " not in value else orjson.dumps(value).decode()
    return orjson.dumps(value, default=str).decode()


class RetriableKafkaErrors(logging.Filter):
    """Lowers aiokafka's ERROR lines about errors it retries itself (see the module doc).

    A record is retried noise when one of its arguments is an aiokafka error instance or
    class whose `retriable` flag is set. Lowered records below `threshold` are dropped.
    """

    def __init__(self, threshold: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._threshold = threshold
        self._clock = clock
        self._grace_ends = clock() + STARTUP_GRACE_S

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or record.levelno != logging.ERROR:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        if not any(getattr(arg, "retriable", False) is True for arg in args):
            return True
        level = logging.DEBUG if self._clock() < self._grace_ends else logging.WARNING
        record.levelno, record.levelname = level, logging.getLevelName(level)
        return level >= self._threshold


class RepeatedLibraryLines(logging.Filter):
    """At most one line per library message template every `REPEAT_WINDOW_S`.

    While a broker is down aiokafka logs "Unable connect to node ..." several times a
    second; the first line says it, the next one (a window later) says how many were
    left out (`repeated`), so an outage stays visible without flooding the log.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("stream"):
            return True
        key = (record.name, record.msg)
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < REPEAT_WINDOW_S:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.repeated = last[1]
        self._seen[key] = (now, 0)
        return True


def configure(level: str, fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route all logging (ours and the libraries') to `stream` (stdout) at `level`.

    `fmt` is `json`, `text`, or `auto`: text when the stream is a terminal.
    """
    out = sys.stdout if stream is None else stream
    text = fmt == "text" or (fmt == "auto" and out.isatty())
    threshold = logging.getLevelNamesMapping()[level.upper()]
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter() if text else JsonFormatter())
    handler.addFilter(RetriableKafkaErrors(threshold))
    handler.addFilter(RepeatedLibraryLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)
    # aiokafka logs every rebalance step and retried request at INFO/WARNING; ours say it once.
    logging.getLogger("aiokafka").setLevel(max(threshold, logging.ERROR))
