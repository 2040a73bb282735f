"""What every peer job shares with `stream run`: the decode, the parse, the document, the write.

Imported inside the peers' own venvs, so it needs nothing beyond pymongo, orjson and
`stream.sms` (no aiokafka, no engine). The document is `stream.sms.document`'s, the one
`stream run` stores, and the write is the sink's: one unordered `insert_many`
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
from stream.sms.document import stored_document
from stream.sms.models import Sms
from stream.sms.parser import parse_sms
from stream.tools.synthetic import DEFAULT_MAX_SMS_BYTES

__all__ = [
    "JobArgs",
    "Parsed",
    "decoded",
    "document",
    "open_collection",
    "parse_args",
    "write_unordered",
]

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


class Parsed(NamedTuple):
    """A decoded SMS and its parse result: the document without its per-batch fields."""

    sms: Sms
    result: dict[str, Any]


def decoded(value: bytes | None) -> Parsed:
    """Decode and parse one record value."""
    sms = decode_sms(value, DEFAULT_MAX_SMS_BYTES)
    return Parsed(sms, parse_sms(sms.body, sms.sender))


def document(
    parsed: Parsed, processor: str, now: datetime, topic: str, partition: int, offset: int
) -> dict[str, Any]:
    """The document `stream run` stores for `parsed` (from `decoded`), first attempt."""
    return stored_document(
        parsed.sms,
        parsed.result,
        processor=processor,
        processed_at=now,
        attempts=1,
        topic=topic,
        partition=partition,
        offset=offset,
    )


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
