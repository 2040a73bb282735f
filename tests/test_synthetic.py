"""The synthetic generator: reproducible, realistic traffic that the builtin parser reads as
its templates meant, and bad record values the codec must dead-letter."""

from __future__ import annotations

import itertools
import json
import random
import statistics
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from stream.errors import PermanentError
from stream.sms.codec import decode_sms
from stream.sms.parser import CATEGORIES, parse_sms
from stream.tools.synthetic import (
    DEFAULT_MAX_SMS_BYTES,
    MEAN_GAP_S,
    labelled_sms,
    malformed_records,
    synthetic_sms,
)

START = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
RECORD_KEYS = {"id", "sender", "body", "received_at", "recipient"}


def _records(seed: int, count: int = 300) -> list[dict[str, object]]:
    return list(synthetic_sms(random.Random(seed), count=count, start=START))


def test_same_seed_same_records_other_seed_other_records() -> None:
    assert _records(7) == _records(7)
    assert _records(7) != _records(8)


def test_labelled_and_plain_generators_agree() -> None:
    labelled = [record for record, _ in labelled_sms(random.Random(3), count=200, start=START)]
    assert labelled == _records(3, 200)


def test_ids_are_unique_uuids() -> None:
    ids = [str(record["id"]) for seed in range(3) for record in _records(seed, 3000)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(sms_id).version == 4 for sms_id in ids[:100])


def test_record_shape_and_times() -> None:
    records = _records(11, 500)
    times = []
    for record in records:
        assert set(record) == RECORD_KEYS
        assert all(isinstance(value, str) and value for value in record.values())
        received = str(record["received_at"])
        assert received.endswith("Z")
        times.append(datetime.fromisoformat(received))
        assert str(record["recipient"]).startswith("+")
        sms = decode_sms(orjson.dumps(record), DEFAULT_MAX_SMS_BYTES)
        assert (sms.id, sms.body) == (record["id"], record["body"])
    assert times[0] == START
    assert times == sorted(times)
    assert len({record["sender"] for record in records}) > 30
    assert len({record["body"] for record in records}) > 0.9 * len(records)  # offers repeat


def test_without_a_start_every_sms_was_received_in_the_past() -> None:
    count = 5062  # the demo's records: none may lie in the future
    before = datetime.now(UTC)
    times = [
        datetime.fromisoformat(str(record["received_at"]))
        for record in synthetic_sms(random.Random(4), count=count)
    ]
    after = datetime.now(UTC)
    span = timedelta(seconds=(count - 1) * MEAN_GAP_S)
    assert max(times) <= after
    assert before - span - timedelta(milliseconds=1) <= times[0] <= after - span
    assert times == sorted(times)


def test_gaps_average_the_mean_gap_and_never_add_up_past_the_span() -> None:
    count = 2000
    times = [datetime.fromisoformat(str(record["received_at"])) for record in _records(6, count)]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    assert 0.9 < statistics.fmean(gaps) / MEAN_GAP_S < 1.1
    assert max(gaps) < 2 * MEAN_GAP_S
    assert times[-1] - times[0] <= timedelta(seconds=(count - 1) * MEAN_GAP_S)


def test_start_defaults_to_now_and_naive_means_utc() -> None:
    before = datetime.now(UTC)
    (first,) = synthetic_sms(random.Random(1), count=1)
    received = datetime.fromisoformat(str(first["received_at"]))
    assert before - timedelta(seconds=1) <= received <= datetime.now(UTC) + timedelta(seconds=1)
    naive_noon = datetime(2024, 1, 1, 12, tzinfo=UTC).replace(tzinfo=None)
    (naive,) = synthetic_sms(random.Random(1), count=1, start=naive_noon)
    assert naive["received_at"] == "2024-01-01T12:00:00.000Z"
    nairobi_3pm = datetime(2024, 1, 1, 15, tzinfo=timezone(timedelta(hours=3)))
    (shifted,) = synthetic_sms(random.Random(1), count=1, start=nairobi_3pm)
    assert shifted["received_at"] == "2024-01-01T12:00:00.000Z"


def test_every_category_and_many_currencies_appear() -> None:
    labels = [label for _, label in labelled_sms(random.Random(5), count=1000, start=START)]
    categories = Counter(label["category"] for label in labels)
    assert set(categories) == set(CATEGORIES)
    currencies = {label.get("currency") for label in labels} - {None}
    assert {"INR", "KES", "NGN", "USD", "GBP", "EUR", "AED", "ZAR"} <= currencies


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_builtin_parser_reads_what_each_template_meant(seed: int) -> None:
    wrong = []
    for record, label in labelled_sms(random.Random(seed), count=2000, start=START):
        result = parse_sms(str(record["body"]), str(record["sender"]))
        for key, expected in label.items():
            got = result[key]
            same = (
                abs(got - expected) < 0.005
                if isinstance(expected, float) and isinstance(got, float)
                else got == expected
            )
            if not same:
                wrong.append(f"{key}: expected {expected!r}, got {got!r} in {record['body']!r}")
    assert not wrong, "\n".join(wrong[:20])


# ------------------------------------------------------------------ malformed records


def test_malformed_records_cover_every_kind_and_the_codec_rejects_them() -> None:
    values = malformed_records(random.Random(9), 16)
    assert len(values) == 16
    assert malformed_records(random.Random(9), 16) == values
    invalid_json, latin1, no_id, body, when, oversize, array, no_sender = values[:8]
    with pytest.raises(json.JSONDecodeError):
        json.loads(invalid_json)
    with pytest.raises(UnicodeDecodeError):
        latin1.decode("utf-8")
    assert "id" not in json.loads(no_id)
    assert not isinstance(json.loads(body)["body"], str)
    with pytest.raises(ValueError, match="isoformat"):
        datetime.fromisoformat(json.loads(when)["received_at"])
    assert len(oversize) > DEFAULT_MAX_SMS_BYTES
    assert isinstance(json.loads(array), list)
    assert json.loads(no_sender)["sender"] == ""
    for value in values:
        with pytest.raises(PermanentError):
            decode_sms(value, DEFAULT_MAX_SMS_BYTES)


def test_malformed_oversize_follows_the_limit() -> None:
    (*_, oversize) = malformed_records(random.Random(2), 6, max_bytes=1000)
    assert 1000 < len(oversize) < 3000


def test_no_malformed_records_asked_none_given() -> None:
    assert malformed_records(random.Random(0), 0) == []
