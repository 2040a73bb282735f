"""Logs are JSON lines and never carry personal data in clear."""

from __future__ import annotations

import logging

import orjson

from stream.observability.logs import JsonFormatter, mask


def test_mask_keeps_last_digits_only() -> None:
    assert mask("+254712345678") == "**********678"
    assert mask("12") == "**"


def test_formatter_emits_one_json_object_with_context() -> None:
    record = logging.LogRecord(
        "stream.x", logging.WARNING, __file__, 1, "dead-lettered %s", ("a",), None
    )
    record.topic = "sms.inbound"
    record.offset = 7
    line = orjson.loads(JsonFormatter().format(record))
    assert line["event"] == "dead-lettered a"
    assert line["level"] == "WARNING"
    assert line["topic"] == "sms.inbound"
    assert line["offset"] == 7
