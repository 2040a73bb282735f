"""The MongoDB sink: every document stored once or rejected with the server's reason, and no
server error (down, refusing, half-way through a bulk) fails a batch or crashes the member.

Error classification runs against a scripted collection (write concern errors and most
codes cannot be provoked on a real single server); refusals, encoding errors, indexes and a
`kill -9` mid-write run against the real Mongo-wire server.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import AutoReconnect, BulkWriteError, DuplicateKeyError, OperationFailure

from stream.adapters.mongo import (
    ACCOUNT_INDEX,
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    INDEXES,
    LOG_EVERY_S,
    TRANSACTIONS_INDEX,
    UNCLASSIFIED_ATTEMPTS,
    MongoSink,
)
from stream.engine.ports import DocumentRejected
from stream.errors import SystemicError

Doc = dict[str, Any]
# The kill comes as the insert is sent; a bulk this size lasts ~1 s on FerretDB/SQLite.
MID_WRITE_DOCS = 5_000
WRITE_DEADLINE_S = 90.0


@dataclass
class Step:
    """What one insert_many call does: raise `error`, or store all but `codes` (id -> code),
    whose write errors carry `details` (id -> extra fields, e.g. MongoDB's `keyPattern`)."""

    codes: Mapping[str, int] = field(default_factory=dict)
    write_concern_error: bool = False
    error: Exception | None = None
    details: Mapping[str, Doc] = field(default_factory=dict)


class ScriptedCollection:
    """An `insert_many` that keeps documents by `_id` like a server and fails as scripted.

    Duplicates get code 11000 on `_id` like on MongoDB; the `Step`s are played one per call, then
    every call succeeds. While `refusing` is set every call (the sink's probe too) raises it,
    until `refusing_calls` insert_many calls have.
    """

    def __init__(self, steps: Iterable[Step] = ()) -> None:
        self.steps = list(steps)
        self.stored: dict[str, Doc] = {}
        self.calls: list[list[str]] = []
        self.probes = 0
        self.refuse_whole_bulk: set[str] = set()
        """Ids whose presence fails the whole command, as FerretDB's "malformed JSON"."""
        self.refusing: OperationFailure | None = None
        self.refusing_calls = 0

    def _refuse(self) -> None:
        if self.refusing is not None:
            raise self.refusing

    async def insert_many(self, documents: list[Doc], *, ordered: bool) -> None:
        assert not ordered
        self.calls.append([d["_id"] for d in documents])
        if self.refusing is not None and self.refusing_calls > 0:
            self.refusing_calls -= 1
            raise self.refusing
        self.refusing = None
        if self.refuse_whole_bulk.intersection(self.calls[-1]):
            raise OperationFailure("SQL logic error: malformed JSON (1)", 1)
        step = self.steps.pop(0) if self.steps else Step()
        if step.error is not None:
            raise step.error
        errors = []
        inserted = 0
        for index, document in enumerate(documents):
            code = step.codes.get(document["_id"])
            details = step.details.get(document["_id"], {})
            if code is None and document["_id"] in self.stored:
                code, details = 11000, {"keyPattern": {"_id": 1}}  # as MongoDB says it
            if code is None:
                bson.encode(document)  # as the driver would, before sending
                self.stored[document["_id"]] = document
                inserted += 1
            else:
                errors.append(
                    {"index": index, "code": code, "errmsg": f"scripted {code}", **details}
                )
        concern = [{"code": 64, "errmsg": "waiting for replication timed out"}]
        if errors or step.write_concern_error:
            raise BulkWriteError(
                {
                    "writeErrors": errors,
                    "writeConcernErrors": concern if step.write_concern_error else [],
                    "nInserted": inserted,
                }
            )

    async def find_one(self, _filter: Doc) -> Doc | None:
        self.probes += 1
        self._refuse()
        return next(iter(self.stored.values()), None)

    async def insert_one(self, document: Doc) -> None:
        self._refuse()
        if document["_id"] in self.stored:
            raise DuplicateKeyError("scripted duplicate", 11000)
        self.stored[document["_id"]] = document

    async def delete_one(self, _filter: Doc) -> None:
        self.stored.pop(_filter["_id"], None)


class FakeTime:
    """A Clock whose `sleep` advances it at once, recording each delay."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


def docs(n: int) -> list[Doc]:
    return [{"_id": f"sms-{i}", "n": i} for i in range(n)]


@pytest.fixture
async def scripted() -> Any:
    """`scripted(*steps) -> (sink, collection, time)`: a sink over a ScriptedCollection."""
    sinks: list[MongoSink] = []

    def make(*steps: Step) -> tuple[MongoSink, ScriptedCollection, FakeTime]:
        fake_time = FakeTime()
        sink = MongoSink(
            "mongodb://127.0.0.1:1/", "db", "c", clock=fake_time
        )
        collection = ScriptedCollection(steps)
        sink._collection = collection  # type: ignore[assignment]
        sinks.append(sink)
        return sink, collection, fake_time

    yield make
    for sink in sinks:
        await sink.aclose()


@pytest.mark.parametrize("code", [11600, 91, 112, 189, 10107, 13435, 11602, 262, 9001])
async def test_transient_code_inside_a_bulk_is_retried_not_dead_lettered(
    scripted: Any, code: int
) -> None:
    sink, collection, fake_time = scripted(Step(codes={"sms-1": code}))
    outcome = await sink.write(docs(3))
    assert outcome.rejected == []
    assert outcome.inserted == 3
    assert sorted(collection.stored) == ["sms-0", "sms-1", "sms-2"]
    assert fake_time.sleeps == [BACKOFF_FIRST_S]


@pytest.mark.parametrize("code", [2, 53, 121, 10334])
async def test_document_code_rejects_that_document_and_stores_its_neighbours(
    scripted: Any, code: int
) -> None:
    sink, collection, fake_time = scripted(*[Step(codes={"sms-1": code})] * 3)
    outcome = await sink.write(docs(3))
    assert outcome.rejected == [DocumentRejected(1, f"code {code}: scripted {code}")]
    assert outcome.inserted == 2
    assert sorted(collection.stored) == ["sms-0", "sms-2"]
    assert fake_time.sleeps == []


async def test_unclassified_code_is_retried_a_few_times_then_rejected(scripted: Any) -> None:
    sink, collection, _ = scripted(*[Step(codes={"sms-0": 4242})] * 10)
    outcome = await sink.write(docs(2))
    assert [r.index for r in outcome.rejected] == [0]
    assert "4242" in outcome.rejected[0].message
    assert sum("sms-0" in call for call in collection.calls) == UNCLASSIFIED_ATTEMPTS
    assert sorted(collection.stored) == ["sms-1"]


async def test_write_concern_error_retries_the_batch_and_counts_each_document_once(
    scripted: Any,
) -> None:
    sink, collection, fake_time = scripted(Step(write_concern_error=True))
    outcome = await sink.write(docs(4))
    assert outcome.inserted == 4
    assert outcome.rejected == []
    assert len(collection.calls) == 2
    assert fake_time.sleeps == [BACKOFF_FIRST_S]


async def test_duplicates_mean_already_stored(scripted: Any) -> None:
    sink, _, _ = scripted()
    await sink.write(docs(2))
    outcome = await sink.write(docs(3))
    assert outcome.inserted == 1
    assert outcome.rejected == []


async def test_command_errors_never_crash_back_off_to_the_cap_and_log_rate_limited(
    scripted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    failures = [OperationFailure("not authorized on db", 13)] * 6 + [AutoReconnect("down")] * 6
    sink, _, fake_time = scripted(*[Step(error=e) for e in failures])
    with caplog.at_level(logging.WARNING, logger="stream.adapters.mongo"):
        outcome = await sink.write(docs(2))
    assert outcome.inserted == 2
    assert sink.healthy
    expected = [min(BACKOFF_FIRST_S * 2**n, BACKOFF_MAX_S) for n in range(len(failures))]
    assert fake_time.sleeps == pytest.approx(expected)
    lines = [r.getMessage() for r in caplog.records]
    # failures at 0, 0.1, 0.3 ... 26.3, 31.3 s: logged at 0 and 31.3 (LOG_EVERY_S apart), then
    # the recovery
    assert LOG_EVERY_S == 30.0
    assert len(lines) == 3
    assert "mongo at 127.0.0.1:1 refused the write for 0s, retrying in 0.1s" in lines[0]
    assert "not authorized" in lines[0]
    assert "unavailable" in lines[1]
    assert "writes again after" in lines[-1]


async def test_a_command_error_one_document_causes_rejects_it_and_stores_the_rest(
    scripted: Any,
) -> None:
    """FerretDB refuses some documents by failing the whole insert command (code 1): the
    sink finds the culprit one document at a time instead of retrying the bulk forever."""
    sink, collection, _ = scripted()
    collection.refuse_whole_bulk = {"sms-2"}
    outcome = await sink.write(docs(4))
    assert outcome.inserted == 3
    assert [r.index for r in outcome.rejected] == [2]
    assert "malformed JSON" in outcome.rejected[0].message
    assert set(collection.stored) == {"sms-0", "sms-1", "sms-3"}


async def test_unhealthy_while_failing(scripted: Any) -> None:
    sink, _, fake_time = scripted(Step(error=AutoReconnect("down")))
    health: list[bool] = []

    async def sleep(seconds: float) -> None:
        health.append(sink.healthy)

    fake_time.sleep = sleep
    await sink.write(docs(1))
    assert health == [False]
    assert sink.healthy


async def test_a_value_error_no_document_explains_is_a_bug_and_raised(scripted: Any) -> None:
    sink, _, _ = scripted(Step(error=ValueError("not about a document")))
    with pytest.raises(ValueError, match="not about a document"):
        await sink.write(docs(2))


# --- against the real server -----------------------------------------------------------


async def test_refused_and_unencodable_documents_are_rejected_and_neighbours_stored(
    stack: Any, mongo_db: Any
) -> None:
    sink = MongoSink(stack.mongo_url, mongo_db.name, "messages")
    batch = [
        {"_id": "ok-0"},
        {"_id": ["an", "array"]},  # every server refuses an array _id
        {"_id": "int", "n": 2**64},  # BSON cannot encode it
        {"_id": "nul", "m": {"k\x00": 1}},  # BSON cannot encode it
        {"_id": "ok-1"},
    ]
    try:
        outcome = await sink.write(batch)
        again = await sink.write(batch)
    finally:
        await sink.aclose()
    assert sorted(r.index for r in outcome.rejected) == [1, 2, 3]
    assert all(r.message for r in outcome.rejected)
    assert outcome.inserted == 2
    assert again.inserted == 0
    assert sorted(r.index for r in again.rejected) == [1, 2, 3]
    stored = await mongo_db["messages"].distinct("_id")
    assert sorted(stored) == ["ok-0", "ok-1"]


async def test_ensure_indexes_is_idempotent_with_members_starting_at_once(
    stack: Any, mongo_db: Any
) -> None:
    sinks = [MongoSink(stack.mongo_url, mongo_db.name, "messages") for _ in range(4)]
    try:
        assert await asyncio.gather(*(s.ensure_indexes() for s in sinks)) == [True] * 4
        assert await sinks[0].ensure_indexes()
    finally:
        for sink in sinks:
            await sink.aclose()
    names = {i["name"] async for i in await mongo_db["messages"].list_indexes()}
    wanted = {m.document["name"] for m in INDEXES}
    accounts = {TRANSACTIONS_INDEX.document["name"], ACCOUNT_INDEX.document["name"]}
    assert wanted <= names
    assert len(names & accounts) == 1


class _DownCollection:
    async def list_indexes(self) -> None:
        raise AutoReconnect("127.0.0.1:1: connection refused")


async def test_ensure_indexes_reports_a_down_server_without_raising(
    scripted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink, _, _ = scripted()
    sink._collection = _DownCollection()
    assert not await sink.ensure_indexes()
    assert "indexes not ensured" in caplog.text


class _InsertStarted(monitoring.CommandListener):
    """Sets `event` when an insert into `database` is sent: the moment to kill the server."""

    def __init__(self, database: str, event: asyncio.Event) -> None:
        self.database, self.event = database, event

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert" and event.database_name == self.database:
            self.event.set()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_kill_9_mid_write_then_restart_stores_each_document_once(
    dedicated_mongo: Any, unique_name: Any, caplog: pytest.LogCaptureFixture
) -> None:
    database = unique_name("db")
    sending = asyncio.Event()
    monitoring.register(_InsertStarted(database, sending))  # process-wide, inert after this test
    sink = MongoSink(dedicated_mongo.url, database, "messages")
    batch = [{"_id": f"sms-{i}", "body": "x" * 100} for i in range(MID_WRITE_DOCS)]
    client: AsyncMongoClient[Doc] = AsyncMongoClient(dedicated_mongo.url)
    try:
        # As serve() does; it also creates the database: FerretDB killed while creating one
        # leaves it without its metadata table and then refuses to start.
        assert await sink.ensure_indexes()
        with caplog.at_level(logging.WARNING, logger="stream.adapters.mongo"):
            writing = asyncio.create_task(sink.write(batch))
            async with asyncio.timeout(WRITE_DEADLINE_S):
                await sending.wait()
            dedicated_mongo.stop()
            await dedicated_mongo.start()
            async with asyncio.timeout(WRITE_DEADLINE_S):
                outcome = await writing
        collection = client[database]["messages"]
        assert outcome.rejected == []
        assert 0 < outcome.inserted <= MID_WRITE_DOCS
        assert await collection.count_documents({}) == MID_WRITE_DOCS
        assert len(await collection.distinct("_id")) == MID_WRITE_DOCS
        host = dedicated_mongo.url.removeprefix("mongodb://").rstrip("/")
        outage = [r.getMessage() for r in caplog.records]
        assert any(f"mongo at {host} unavailable" in line for line in outage), outage
        assert "writes again" in outage[-1]
    finally:
        await sink.aclose()
        await client.drop_database(database)
        await client.close()


async def test_duplicate_key_on_another_unique_index_is_refused_naming_it(scripted: Any) -> None:
    """MongoDB names the index of a duplicate: only `_id` means "already stored"."""
    on_sender = {
        "keyPattern": {"sender": 1},
        "keyValue": {"sender": "+254700000001"},
        "errmsg": "E11000 duplicate key error collection: db.c index: sender_unique dup key",
    }
    sink, collection, _ = scripted(
        *[Step(codes={"sms-1": 11000}, details={"sms-1": on_sender})] * 2
    )
    collection.stored["sms-0"] = {"_id": "sms-0"}
    outcome = await sink.write(docs(3))
    assert outcome.inserted == 1
    assert [(r.index, r.reason) for r in outcome.rejected] == [(1, "duplicate_key")]
    assert "sender_unique (sender)" in outcome.rejected[0].message
    assert sorted(collection.stored) == ["sms-0", "sms-2"]


@pytest.mark.parametrize(
    ("code", "probed"), [(1, True), (24, False), (14031, False)], ids=["code-1", "24", "14031"]
)
async def test_an_error_a_known_good_write_meets_too_is_retried_never_blamed_on_documents(
    scripted: Any, code: int, probed: bool
) -> None:
    """FerretDB's "database is locked" (code 1), LockTimeout, OutOfDiskSpace: the server's;
    documents are retried with backoff for as long as it lasts (within the halt bound)."""
    sink, collection, fake_time = scripted()
    collection.stored["old"] = {"_id": "old"}
    collection.refusing = OperationFailure("database is locked (5) (SQLITE_BUSY)", code)
    collection.refusing_calls = 3 * UNCLASSIFIED_ATTEMPTS
    outcome = await sink.write(docs(3))
    assert outcome.rejected == []
    assert outcome.inserted == 3
    assert len(fake_time.sleeps) == 3 * UNCLASSIFIED_ATTEMPTS
    assert (collection.probes > 0) == probed


async def test_a_refusal_past_the_bound_halts_and_the_probe_tells_when_it_is_over(
    scripted: Any,
) -> None:
    sink, collection, fake_time = scripted()
    collection.stored["old"] = {"_id": "old"}
    collection.refusing = OperationFailure("database is locked (5) (SQLITE_BUSY)", 1)
    collection.refusing_calls = 10**9
    sink._halt_after_s = 60.0
    with pytest.raises(SystemicError) as raised:
        await sink.write(docs(2))
    assert raised.value.reason == "mongo_refused"
    assert "database is locked" in str(raised.value)
    assert 60.0 <= fake_time.now < 60.0 + BACKOFF_MAX_S
    assert not sink.healthy
    assert await sink.probe() is not None
    collection.refusing = None
    assert await sink.probe() is None
    assert sink.healthy


async def test_a_unique_index_other_than_id_refuses_the_clash_and_stores_the_rest(
    stack: Any, mongo_db: Any
) -> None:
    """Against the real server: MongoDB names the index, FerretDB does not (then the sink
    looks the ids up). A redelivered SMS is already stored; one clashing on `sender` is
    refused naming the index, never counted as stored."""
    await mongo_db["messages"].create_index("sender", unique=True, name="sender_unique")
    sink = MongoSink(stack.mongo_url, mongo_db.name, "messages")
    try:
        assert (await sink.write([{"_id": "a", "sender": "x"}])).inserted == 1
        outcome = await sink.write(
            [{"_id": "a", "sender": "x"}, {"_id": "b", "sender": "x"}, {"_id": "c", "sender": "y"}]
        )
    finally:
        await sink.aclose()
    assert outcome.inserted == 1
    assert [(r.index, r.reason) for r in outcome.rejected] == [(1, "duplicate_key")]
    assert "sender_unique" in outcome.rejected[0].message
    assert sorted(await mongo_db["messages"].distinct("_id")) == ["a", "c"]


class FerretTable:
    """A FerretDB collection's SQLite table, renamed away and back behind the server's back:
    every write then fails at once with `code 1 InternalError "no such table"`, the same
    class of error as `database is locked` (which FerretDB returns after a 20 s wait)."""

    def __init__(self, data_dir: Path, database: str, collection: str) -> None:
        self.path = data_dir / f"{database}.sqlite"
        with closing(sqlite3.connect(self.path)) as db:
            (self.table,) = db.execute(
                "SELECT table_name FROM _ferretdb_collections WHERE name = ?", (collection,)
            ).fetchone()

    def _rename(self, old: str, new: str) -> None:
        with closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            db.execute(f'ALTER TABLE "{old}" RENAME TO "{new}"')

    def break_(self) -> None:
        self._rename(self.table, f"{self.table}_away")

    def repair(self) -> None:
        self._rename(f"{self.table}_away", self.table)


async def ferret_table(server: Any, tmp_path: Path, database: str) -> FerretTable:
    """The collection `messages` of `database` on a dedicated FerretDB (skips on mongod)."""
    client: AsyncMongoClient[Doc] = AsyncMongoClient(server.url)
    try:
        await client[database]["messages"].insert_one({"_id": "stored-before"})
    finally:
        await client.close()
    data_dir = tmp_path / "mongo" / "data"
    if not (data_dir / f"{database}.sqlite").exists():
        pytest.skip("the dedicated server is not FerretDB/SQLite")
    return FerretTable(data_dir, database, "messages")


async def test_a_server_refusing_every_write_is_retried_then_halts_and_nothing_is_blamed(
    dedicated_mongo: Any, unique_name: Any, tmp_path: Path
) -> None:
    database = unique_name("db")
    table = await ferret_table(dedicated_mongo, tmp_path, database)
    halting = MongoSink(dedicated_mongo.url, database, "messages", halt_after_s=1.0)
    patient = MongoSink(dedicated_mongo.url, database, "messages", halt_after_s=60.0)
    try:
        table.break_()
        with pytest.raises(SystemicError, match="no such table"):
            await asyncio.wait_for(halting.write(docs(20)), WRITE_DEADLINE_S)
        assert not halting.healthy
        assert await halting.probe() is not None
        writing = asyncio.create_task(patient.write(docs(20)))
        await asyncio.sleep(0.5)  # let it fail a few times; not a condition to wait for
        assert not writing.done()
        assert not patient.healthy
        table.repair()
        outcome = await asyncio.wait_for(writing, WRITE_DEADLINE_S)
        assert outcome.rejected == []
        assert outcome.inserted == 20
        assert patient.healthy
        assert await halting.probe() is None
        assert halting.healthy
    finally:
        await halting.aclose()
        await patient.aclose()
