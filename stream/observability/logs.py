"""JSON-lines logging on stdout, and masking for personal data.

One event per line so log shippers need no parsing rules. SMS bodies are never logged;
phone numbers and sender ids are logged only through `mask`, which keeps the last digits
an operator needs to correlate a complaint.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

__all__ = ["CONTEXT_FIELDS", "configure", "mask"]

CONTEXT_FIELDS = ("topic", "partition", "offset", "sms_id", "reason", "sender")
"""`extra=` keys copied into the JSON line; anything else passed as extra is dropped."""

KEEP_LAST = 3


def mask(value: str) -> str:
    """`+254712345678` -> `**********678`: enough to correlate, not enough to identify."""
    if len(value) <= KEEP_LAST:
        return "*" * len(value)
    return "*" * (len(value) - KEEP_LAST) + value[-KEEP_LAST:]


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, event, context, error."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            if name in record.__dict__:
                line[name] = record.__dict__[name]
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str) -> None:
    """Route all logging (ours and the libraries') to stdout as JSON lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every rebalance step and retried request at INFO/WARNING; ours say it once.
    logging.getLogger("aiokafka").setLevel(max(logging.getLevelName(level), logging.ERROR))
