"""The stored document: one shape for the engine, the bench peers and the property test."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stream.sms.codec import RESERVED_FIELDS, decode_sms
from stream.sms.document import stored_document
from stream.sms.parser import parse_sms

VALUE = (
    b'{"id": "sms-1", "sender": "VM-HDFCBK", "body": "Rs 500 debited from A/c XX1234",'
    b' "received_at": "2026-11-28T10:00:00+03:00", "parsed": "theirs", "colour": "blue"}'
)
NOW = datetime(2026, 11, 28, 7, 0, 1, tzinfo=UTC)


def _document() -> dict[str, Any]:
    sms = decode_sms(VALUE, 65536)
    return stored_document(
        sms,
        parse_sms(sms.body, sms.sender),
        processor="builtin",
        processed_at=NOW,
        attempts=2,
        topic="sms.retry.1",
        partition=3,
        offset=41,
    )


def test_the_codec_reserves_exactly_the_fields_the_document_sets() -> None:
    assert set(_document()) - {"colour", "parsed%"} == RESERVED_FIELDS


def test_unknown_fields_are_kept_beside_the_known_ones() -> None:
    document = _document()
    assert document["colour"] == "blue"
    assert document["parsed%"] == "theirs"
    assert document["parsed"]["amount"] == 500.0


def test_the_document_names_its_sms_processing_and_record() -> None:
    document = _document()
    assert document["_id"] == "sms-1"
    assert document["received_at"] == datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
    assert (document["processor"], document["processed_at"], document["attempts"]) == (
        "builtin",
        NOW,
        2,
    )
    assert document["source"] == {"topic": "sms.retry.1", "partition": 3, "offset": 41}
