"""Logs: JSON for shippers, text for people, structured fields, no noise, no personal data."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import NamedTuple

import orjson
import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError, InvalidTopicError
from support import ManualClock

from stream.config import Settings
from stream.observability import logs
from stream.observability.logs import (
    REPEAT_WINDOW_S,
    STARTUP_GRACE_S,
    JsonFormatter,
    RepeatedLibraryLines,
    RetriableKafkaErrors,
    TextFormatter,
    mask,
    partitions_field,
)


class TP(NamedTuple):
    topic: str
    partition: int


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`configure` rewires the root logger; give the next test pytest's wiring back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    libraries = {n: logging.getLogger(n).level for n in ("aiokafka",)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in libraries.items():
        logging.getLogger(name).setLevel(old)


def _record(
    msg: str,
    *args: object,
    name: str = "stream.x",
    level: int = logging.INFO,
    **extra: object,
) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_mask_keeps_last_digits_only() -> None:
    assert mask("+254712345678") == "**********678"
    assert mask("12") == "**"


def test_partitions_field_is_a_sorted_list_of_topic_partition() -> None:
    tps = {TP("sms.retry.1", 0), TP("sms", 10), TP("sms", 2)}
    assert partitions_field(tps) == ["sms:2", "sms:10", "sms.retry.1:0"]
    assert partitions_field([]) == []


def test_json_line_carries_extra_fields_as_values_not_reprs() -> None:
    settings = Settings().replace(api_token="s3cret")
    record = _record(
        "partitions assigned",
        level=logging.WARNING,
        topic="sms.inbound",
        offset=7,
        partitions=partitions_field([TP("sms.inbound", 1), TP("sms.inbound", 0)]),
        settings=settings.masked(),
    )
    line = orjson.loads(JsonFormatter().format(record))
    assert line["event"] == "partitions assigned"
    assert line["level"] == "WARNING"
    assert line["topic"] == "sms.inbound"
    assert line["offset"] == 7
    assert line["partitions"] == ["sms.inbound:0", "sms.inbound:1"]
    assert line["settings"]["batch_max"] == 500
    assert line["settings"]["retry_delays_s"] == [5.0, 30.0, 300.0]
    assert line["settings"]["api_token"] == "***"
    assert "s3cret" not in JsonFormatter().format(record)


def test_text_line_is_readable() -> None:
    record = _record("started", name="stream.app", topic="sms.inbound", partitions=["sms:0"])
    line = TextFormatter().format(record)
    assert "INFO" in line
    assert "stream.app  started" in line
    assert "topic=sms.inbound" in line
    assert 'partitions=["sms:0"]' in line
    assert "{" not in line.split("started")[0], "no JSON before the event"


def test_configure_picks_text_on_a_terminal_and_json_elsewhere(restore_logging: None) -> None:
    for stream, fmt, is_json in [
        (Terminal(), "auto", False),
        (io.StringIO(), "auto", True),
        (Terminal(), "json", True),
        (io.StringIO(), "text", False),
    ]:
        logs.configure("info", fmt, stream)
        logging.getLogger("stream.test").info("hello", extra={"n": 1})
        line = stream.getvalue().strip()
        assert line.startswith("{") is is_json, (fmt, line)
        assert "hello" in line


def test_retriable_kafka_errors_are_lowered_and_real_ones_kept() -> None:
    clock = ManualClock()
    noise = RetriableKafkaErrors(logging.INFO, clock.monotonic)
    coordinator = _record(
        "Group Coordinator Request failed: %s",
        GroupCoordinatorNotAvailableError(),
        name="aiokafka.consumer.group_coordinator",
        level=logging.ERROR,
    )
    assert noise.filter(coordinator) is False, "dropped during the start-up grace"
    by_class = _record(
        "Error fetching metadata for topic %s: %s",
        "sms",
        GroupCoordinatorNotAvailableError,
        name="aiokafka.cluster",
        level=logging.ERROR,
    )
    assert noise.filter(by_class) is False
    clock.now += STARTUP_GRACE_S
    later = _record(
        "Group Coordinator Request failed: %s",
        GroupCoordinatorNotAvailableError(),
        name="aiokafka",
        level=logging.ERROR,
    )
    assert noise.filter(later) is True
    assert later.levelname == "WARNING", "after the grace: visible, but not an ERROR"
    fatal = _record(
        "'%s' is not a valid topic name", InvalidTopicError(), name="aiokafka", level=logging.ERROR
    )
    refused = _record(
        'Unable connect to "%s:%s": %s',
        "127.0.0.1",
        1,
        ConnectionRefusedError(111, "refused"),
        name="aiokafka",
        level=logging.ERROR,
    )
    ours = _record("x %s", GroupCoordinatorNotAvailableError(), level=logging.ERROR)
    for record in (fatal, refused, ours):
        assert noise.filter(record) is True
        assert record.levelname == "ERROR"


def test_debug_level_shows_lowered_kafka_errors_during_the_grace() -> None:
    noise = RetriableKafkaErrors(logging.DEBUG, ManualClock().monotonic)
    record = _record(
        "Group Coordinator Request failed: %s",
        GroupCoordinatorNotAvailableError(),
        name="aiokafka",
        level=logging.ERROR,
    )
    assert noise.filter(record) is True
    assert record.levelname == "DEBUG"


def test_a_librarys_repeated_line_is_said_once_a_window_with_the_count() -> None:
    clock = ManualClock()
    repeated = RepeatedLibraryLines(clock=clock.monotonic)
    lines = [_library_record("Unable connect to node with id %s", 1) for _ in range(5)]
    assert [repeated.filter(r) for r in lines] == [True, False, False, False, False]
    clock.now += REPEAT_WINDOW_S
    later = _library_record("Unable connect to node with id %s", 1)
    assert repeated.filter(later)
    assert later.__dict__["repeated"] == 4
    ours = logging.LogRecord("stream.engine.loop", logging.WARNING, __file__, 1, "x", (), None)
    assert all(repeated.filter(ours) for _ in range(3))


def _library_record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, args, None)
