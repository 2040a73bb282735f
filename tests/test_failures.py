"""The retry/DLQ format round-trips, and the routing policy sends each failure where it belongs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stream.engine.failures import (
    NOT_BEFORE,
    VALUE_NULL,
    VALUE_OMITTED,
    Delivery,
    Failure,
    Origin,
    foreign_headers,
    header,
    origin_of,
    route,
)
from stream.errors import PermanentError, TransientError

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
DELAYS = (5.0, 30.0, 300.0)


def test_headers_round_trip() -> None:
    failure = Failure(
        origin=Origin("sms", 2, 41, previous_attempts=1, replayed_from="dlq:0:7"),
        attempt=2,
        error_class="http_503",
        error_message="x" * 1000,
        first_failed_at=NOW,
        not_before=NOW + timedelta(seconds=30),
    )
    parsed = Failure.from_headers(failure.to_headers())
    assert parsed is not None
    assert parsed.origin == Origin(
        "sms", 2, 41, previous_attempts=2, first_failed_at=NOW, replayed_from="dlq:0:7"
    )
    assert (parsed.attempt, parsed.not_before) == (2, NOW + timedelta(seconds=30))
    assert len(parsed.error_message) == 512


@pytest.mark.parametrize(
    "headers",
    [None, [], [("stream.attempt", b"x")], [("stream.original.topic", b"sms")]],
)
def test_missing_or_unreadable_headers_make_a_fresh_origin(
    headers: list[tuple[str, bytes]] | None,
) -> None:
    assert Failure.from_headers(headers) is None
    assert origin_of("sms", 1, 9, headers) == Origin("sms", 1, 9)


def test_copies_keep_the_producers_headers_and_replace_ours() -> None:
    old = Failure(Origin("sms", 0, 1), 1, "http_503", "m", NOW, NOW).to_headers()
    new = Failure(Origin("sms", 0, 1), 2, "http_503", "m", NOW)
    delivery = Delivery.failed(
        topic="sms.dlq", key=b"k", value=b"v",
        original_headers=[("trace", b"1"), *old], failure=new,
    )
    assert foreign_headers(delivery.headers) == [("trace", b"1")]
    assert header(delivery.headers, NOT_BEFORE) is None
    assert [k for k, _ in delivery.headers].count("stream.attempt") == 1


def test_a_copy_without_its_value_says_how_large_it_was() -> None:
    failure = Failure(Origin("sms", 0, 1), 1, "oversize", "m", NOW)
    delivery = Delivery.failed(topic="sms.dlq", key=None, value=b"v" * 100,
                               original_headers=[("trace", b"1")], failure=failure)
    smaller = delivery.without_value()
    assert smaller.value == b""
    assert header(smaller.headers, VALUE_OMITTED) == "100"
    assert Failure.from_headers(smaller.headers) is not None
    bare = smaller.without_value(keep_foreign_headers=False)
    assert foreign_headers(bare.headers) == []
    assert header(bare.headers, VALUE_OMITTED) == "100"


@pytest.mark.parametrize(
    ("from_level", "retry_after", "level", "delay"),
    [
        (0, None, 1, 5.0),
        (1, None, 2, 30.0),
        (0, 20.0, 2, 30.0),
        (0, 30.0, 2, 30.0),
        (0, 3000.0, 3, 300.0),
        (2, 1.0, 3, 300.0),
    ],
)
def test_transient_errors_climb_the_ladder_to_the_level_covering_retry_after(
    from_level: int, retry_after: float | None, level: int, delay: float
) -> None:
    error = TransientError("503", reason="http_503", retry_after=retry_after)
    where = route(error, Origin("sms", 0, 0, previous_attempts=from_level), from_level,
                  DELAYS, NOW)
    assert (where.retry_level, where.not_before) == (level, NOW + timedelta(seconds=delay))
    assert where.attempt == from_level + 1


def test_after_the_last_level_and_for_permanent_errors_the_dlq() -> None:
    transient = TransientError("503", reason="http_503")
    assert route(transient, Origin("sms", 0, 0, 3), 3, DELAYS, NOW).dead
    assert route(PermanentError("bad"), Origin("sms", 0, 0), 0, DELAYS, NOW).dead


def test_a_replayed_record_climbs_again_while_its_attempts_go_on() -> None:
    origin = Origin("sms", 0, 0, previous_attempts=4, replayed_from="dlq:0:1")
    where = route(TransientError("503"), origin, 0, DELAYS, NOW)
    assert (where.retry_level, where.attempt) == (1, 5)


def test_null_header_values_are_carried_and_a_null_stream_header_reads_as_absent() -> None:
    failure = Failure(Origin("sms", 0, 1), 1, "http_503", "busy", NOW)
    headers = [*failure.to_headers(), ("stream.attempt", None), ("trace", None)]
    assert header([("stream.attempt", None)], "stream.attempt") is None
    assert Failure.from_headers([("stream.attempt", None), ("stream.original.topic", None)]) is None
    assert origin_of("sms", 0, 5, [("stream.attempt", None)]) == Origin("sms", 0, 5)
    copy = Delivery.failed(topic="sms.dlq", key=b"k", value=b"v", original_headers=headers,
                           failure=failure)
    assert ("trace", None) in copy.headers
    assert copy.size() > 0


def test_a_record_without_key_and_value_is_copied_with_an_empty_value_said_in_a_header() -> None:
    failure = Failure(Origin("sms", 0, 1), 1, "empty", "no value", NOW)
    copy = Delivery.failed(topic="sms.dlq", key=None, value=None, original_headers=None,
                           failure=failure)
    assert (copy.key, copy.value, header(copy.headers, VALUE_NULL)) == (None, b"", "true")
    smaller = copy.without_value(keep_foreign_headers=False)
    assert header(smaller.headers, VALUE_NULL) == "true"
