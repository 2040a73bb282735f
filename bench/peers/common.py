"""What every peer job shares with `stream run`: the decode, the parse, the document, the write.

Imported inside the peers' own venvs, so it needs nothing beyond pymongo, orjson and
`stream.sms` (no aiokafka, no engine). The document has the fields and `_id` that
`stream.engine.batch` stores, and the write is the sink's: one unordered `insert_many`
with the same write concern, duplicate-key errors meaning "already stored". What the peers
leave out is what their libraries leave to the user: validation errors are not routed to
a DLQ (the synthetic backlog has none), and a failed write crashes the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError
from pymongo.write_concern import WriteConcern

from stream.sms.codec import decode_sms
from stream.sms.parser import parse_sms
from stream.tools.synthetic import DEFAULT_MAX_SMS_BYTES

__all__ = ["JobArgs", "decoded", "document", "open_collection", "parse_args", "write_unordered"]

DUPLICATE_KEY = 11000


class JobArgs(NamedTuple):
    """Every job's argv, in the order bench/baseline.py takes it."""

    bootstrap: str
    topic: str
    group: str
    mongo_url: str
    db: str
    collection: str


def parse_args(argv: Sequence[str]) -> JobArgs:
    """`BOOTSTRAP TOPIC GROUP MONGO_URL DB COLLECTION`; exits with the usage otherwise."""
    if len(argv) != len(JobArgs._fields):
        raise SystemExit("usage: BOOTSTRAP TOPIC GROUP MONGO_URL DB COLLECTION")
    return JobArgs(*argv)


def decoded(value: bytes | None) -> dict[str, Any]:
    """Decode and parse one record value: the document without its per-batch fields."""
    sms = decode_sms(value, DEFAULT_MAX_SMS_BYTES)
    return {
        **sms.extra,
        "_id": sms.id,
        "sender": sms.sender,
        "body": sms.body,
        "received_at": sms.received_at,
        "recipient": sms.recipient,
        "meta": sms.meta,
        "parsed": parse_sms(sms.body, sms.sender),
    }


def document(
    partial: dict[str, Any], processor: str, now: datetime, topic: str, partition: int, offset: int
) -> dict[str, Any]:
    """`partial` (from `decoded`) completed as `stream run` stores it."""
    partial["processor"] = processor
    partial["processed_at"] = now
    partial["attempts"] = 1
    partial["source"] = {"topic": topic, "partition": partition, "offset": offset}
    return partial


def open_collection(url: str, db: str, name: str) -> tuple[MongoClient[Any], Collection[Any]]:
    """A synchronous client (both peers are synchronous) and the collection, written with
    the sink's write concern."""
    client: MongoClient[Any] = MongoClient(url)
    collection = client[db].get_collection(name, write_concern=WriteConcern(w="majority", j=True))
    return client, collection


def write_unordered(collection: Collection[Any], documents: list[dict[str, Any]]) -> None:
    """Insert every document not stored yet; anything but a duplicate key is raised."""
    if not documents:
        return
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        if any(e["code"] != DUPLICATE_KEY for e in exc.details["writeErrors"]):
            raise
