"""Decoding protects everything downstream: only valid SMS pass, every bad value says why."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.errors import PermanentError
from stream.sms.codec import decode_sms

MAX = 65536
GOOD = {
    "id": "sms-1",
    "sender": "+254712345678",
    "body": "Your code is 1234",
    "received_at": "2026-11-28T10:00:00Z",
}


def encode(**changes: object) -> bytes:
    return orjson.dumps({**GOOD, **changes})


def test_valid_sms_decodes_with_aware_timestamp() -> None:
    sms = decode_sms(encode(recipient="+254700000001", meta={"gw": "a"}), MAX)
    assert sms.id == "sms-1"
    assert sms.received_at == datetime(2026, 11, 28, 10, tzinfo=UTC)
    assert sms.recipient == "+254700000001"
    assert sms.meta == {"gw": "a"}
    assert sms.extra == {}


def test_naive_timestamp_is_taken_as_utc() -> None:
    assert decode_sms(encode(received_at="2026-11-28T10:00:00"), MAX).received_at.tzinfo is UTC


def test_unknown_fields_are_kept_with_storable_keys() -> None:
    sms = decode_sms(encode(channel="gsm", **{"$weird": 1}, meta={"a.b": {"$c": 2}}), MAX)
    assert sms.extra == {"channel": "gsm", "_weird": 1}
    assert sms.meta == {"a_b": {"_c": 2}}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"x" * (MAX + 1), "oversize"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "id"}), "missing_field"),
        (encode(id=""), "invalid_field"),
        (encode(id=7), "invalid_field"),
        (encode(id="x" * 300), "invalid_field"),
        (encode(sender=None), "invalid_field"),
        (encode(body=["a"]), "invalid_field"),
        (encode(body="nul\x00inside"), "invalid_field"),
        (encode(received_at="yesterday"), "invalid_field"),
        (encode(received_at=1700000000), "invalid_field"),
        (encode(recipient=5), "invalid_field"),
        (encode(meta="text"), "invalid_field"),
    ],
)
def test_bad_values_raise_permanent_error_with_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(PermanentError) as caught:
        decode_sms(value, MAX)
    assert caught.value.reason == reason
    assert str(caught.value)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_permanent_error(value: bytes) -> None:
    with contextlib.suppress(PermanentError):
        decode_sms(value, MAX)
