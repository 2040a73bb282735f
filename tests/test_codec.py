"""Decoding protects everything downstream: only valid SMS pass, every bad value says why."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.errors import PermanentError
from stream.sms.codec import (
    MAX_NESTING,
    MAX_SENDER_CHARS,
    RESERVED_FIELDS,
    UNCHECKED_SIZE_BYTES,
    decode_sms,
)

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
    sms = decode_sms(encode(channel="gsm", **{"$weird": 1}, meta={"a.b": {"$c": [{"5%": 2}]}}), MAX)
    assert sms.extra == {"channel": "gsm", "%24weird": 1}
    assert sms.meta == {"a%2Eb": {"%24c": [{"5%25": 2}]}}


def test_rewritten_keys_never_collide_and_decode_back() -> None:
    keys = ["$", ".", "%24", "%2E", "_", "a.b", "a%2Eb", "$a", "%", "%25", "x\x00y", "x%00y", "$$"]
    keys += ["\x05", "%05", "\x1f\x7f", "\u2028", "é"]
    sms = decode_sms(encode(meta=dict.fromkeys(keys, 1)), MAX)
    assert sms.meta is not None
    assert len(sms.meta) == len(keys)
    assert sorted(unquote(k) for k in sms.meta) == sorted(keys)


def test_top_level_field_named_like_a_document_field_is_kept_under_its_own_name() -> None:
    sms = decode_sms(encode(_id="x", parsed={"a": 1}, source="gw-2", **{"$id": 3}), MAX)
    assert sms.extra == {"_id%": "x", "parsed%": {"a": 1}, "source%": "gw-2", "%24id": 3}
    assert not RESERVED_FIELDS & sms.extra.keys()


def test_received_at_is_converted_to_utc() -> None:
    sms = decode_sms(encode(received_at="2026-11-28T13:00:00+03:00"), MAX)
    assert sms.received_at == datetime(2026, 11, 28, 10, tzinfo=UTC)
    assert sms.received_at.utcoffset() == timedelta(0)


def test_meta_values_bson_holds_are_kept_as_they_are() -> None:
    meta = {
        "i": [2**63 - 1, -(2**63)],
        "f": 1.5,
        "n": None,
        "b": True,
        "deep": nested(MAX_NESTING - 1),
    }
    assert decode_sms(encode(meta=meta), MAX).meta == meta


def nested(levels: int) -> object:
    """`levels` levels of objects and arrays, alternating, around a 1."""
    value: object = 1
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


def deep_json(levels: int) -> bytes:
    """A record whose meta holds `levels` nested arrays (orjson.dumps recurses; this doesn't)."""
    return encode(meta={"x": "@"}).replace(b'"@"', b"[" * levels + b"1" + b"]" * levels)


@pytest.mark.parametrize(
    ("value", "reason", "says"),
    [
        (encode(meta={"n": 2**63}), "unstorable_field", "meta.n holds 9223372036854775808"),
        (encode(meta={"a": [1, {"b": 2**64 - 1}]}), "unstorable_field", "meta.a.1.b holds"),
        (encode(channel=2**63), "unstorable_field", "'channel' holds"),
        (encode(meta={"d": nested(MAX_NESTING)}), "unstorable_field", "deeper than 32"),
        (deep_json(MAX_NESTING), "unstorable_field", "deeper than 32"),
        (deep_json(1020), "unstorable_field", "deeper than 32"),
        (deep_json(5000), "invalid_json", "depth limit"),
        (encode(received_at="0001-01-01T00:00:00+01:00"), "invalid_field", "outside years"),
        (encode(received_at="9999-12-31T23:59:59-14:00"), "invalid_field", "outside years"),
        (encode(sender="x" * (MAX_SENDER_CHARS + 1)), "invalid_field", "sender"),
        (b'{"id": "a", "n": 1e400}', "invalid_json", "infinity"),
    ],
)
def test_values_bson_cannot_hold_are_rejected_with_a_precise_reason(
    value: bytes, reason: str, says: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        decode_sms(value, MAX)
    assert caught.value.reason == reason
    assert says in str(caught.value)


def test_a_value_whose_document_would_exceed_16_mib_is_oversize() -> None:
    zeros = b"[" + b"0," * (3 * 1024 * 1024) + b"0]"  # 6 MiB of JSON, ~35 MiB of BSON
    value = encode(meta={"z": "@"}).replace(b'"@"', zeros)
    with pytest.raises(PermanentError) as caught:
        decode_sms(value, 16 * 1024 * 1024)
    assert caught.value.reason == "oversize"


def test_a_large_value_that_fits_is_decoded() -> None:
    value = encode(body="x" * (UNCHECKED_SIZE_BYTES + 1000))
    assert len(decode_sms(value, 16 * 1024 * 1024).body) == UNCHECKED_SIZE_BYTES + 1000


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
