"""Property: at the codec -> sink boundary every record value is stored or rejected with a
reason, never an exception, against the real Mongo-wire server.

Hypothesis builds record values from JSON of every type, size and depth (inside and outside
the limits BSON and the servers set) for `meta`, unknown top-level fields, `received_at`,
`id` and the top level itself. Each value goes through `decode_sms` (PermanentError with a
reason, or an Sms), the builtin processor, and `MongoSink.write` in batches, so a bad
document also shows it does not fail its neighbours.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stream.adapters.mongo import MongoSink
from stream.errors import PermanentError
from stream.processors.builtin import BuiltinProcessor
from stream.sms.codec import MAX_ID_CHARS, decode_sms
from stream.sms.document import stored_document
from stream.sms.models import Sms

MAX_BYTES = 65536
PLACEHOLDER = "\ue000deep\ue000"

keys = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["$", ".", "$a", "a.b", "%", "%24", "%2E", "\x00", "a\x00", "", "_id"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)
offsets = st.sampled_from(["", "Z", "+00:00", "+01:00", "-14:00", "+14:00", "+05:30"])
received = st.one_of(
    st.builds(lambda dt, off: dt.isoformat() + off, st.datetimes(), offsets),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", "yesterday"]),
    json_values,
)
ids = st.one_of(
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12),
    st.text(max_size=0),
    st.just("x" * (MAX_ID_CHARS + 1)),
    st.just("nul\x00id"),
    json_values,
)


def _dumps(value: object) -> bytes:
    """JSON as any producer may write it (the stdlib writes integers of any size)."""
    return json.dumps(value, ensure_ascii=False).encode()


@st.composite
def record_values(draw: st.DrawFn) -> bytes:
    """One record value: mostly an SMS with one odd part or a few, sometimes any JSON."""

    def sometimes(normal: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
        return draw(odd if draw(st.integers(0, 5)) == 0 else normal)

    if draw(st.integers(0, 19)) == 0:
        return _dumps(draw(json_values))
    obj: dict[str, Any] = {
        "id": sometimes(st.uuids().map(str), ids),
        "sender": sometimes(st.just("+254712345678"), json_values),
        "body": sometimes(st.just("Your code is 1234"), st.text(max_size=40)),
        "received_at": sometimes(st.just("2026-11-28T10:00:00+03:00"), received),
    }
    if draw(st.integers(0, 19)) == 0:
        del obj[draw(st.sampled_from(sorted(obj)))]
    if draw(st.integers(0, 3)):
        obj["meta"] = sometimes(st.dictionaries(keys, json_values, max_size=5), json_values)
    obj.update(draw(st.dictionaries(keys, json_values, max_size=3)))
    levels = sometimes(st.just(0), st.sampled_from([31, 32, 33, 1020, 1030]) | st.integers(1, 1100))
    if levels:
        obj["meta"] = {"deep": PLACEHOLDER}
    value = _dumps(obj)
    if levels:
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        nested = opener * levels + b"1" + closer * levels
        value = value.replace(_dumps(PLACEHOLDER), nested)
    return value


def _decoded(value: bytes) -> Sms | PermanentError:
    try:
        return decode_sms(value, MAX_BYTES)
    except PermanentError as error:
        return error


def _document(sms: Sms, parsed: dict[str, Any]) -> dict[str, Any]:
    """The stored document, as the engine builds it for a first attempt."""
    return stored_document(
        sms,
        parsed,
        processor="builtin",
        processed_at=datetime.now(sms.received_at.tzinfo),
        attempts=1,
        topic="sms",
        partition=0,
        offset=0,
    )


@pytest.fixture(scope="module")
async def sink(stack: Any, mongo_client: Any) -> Any:
    name = "property_codec_sink"
    await mongo_client.drop_database(name)
    sink = MongoSink(stack.mongo_url, name, "messages")
    yield sink, mongo_client[name]["messages"]
    await sink.aclose()
    await mongo_client.drop_database(name)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(record_values(), min_size=1, max_size=8))
async def test_every_record_is_stored_or_rejected_with_a_reason(
    sink: Any, values: list[bytes]
) -> None:
    writer, collection = sink
    decoded = [_decoded(value) for value in values]
    for result in decoded:
        if isinstance(result, PermanentError):
            assert result.reason not in ("permanent", "error")
            assert str(result)
            event(f"dead-lettered: {result.reason}")
    valid = [sms for sms in decoded if isinstance(sms, Sms)]
    outcomes = await BuiltinProcessor().process_many(valid)
    documents = [
        _document(sms, parsed)
        for sms, parsed in zip(valid, outcomes, strict=True)
        if isinstance(parsed, dict)
    ]
    written = await writer.write(documents)
    rejected = {r.index: r.message for r in written.rejected}
    assert all(rejected.values())
    for index, document in enumerate(documents):
        event("unstorable (server)" if index in rejected else "stored")
        if index not in rejected:
            assert await collection.find_one({"_id": document["_id"]}, {"_id": 1}) is not None
