"""`stream run` against a hostile parse API for a while, then a good one, with counts.

The API answers every other call with one of the answers tests/test_http_hostile.py covers
one by one (broken chunk framing, both framings, 1xx and header floods, an inflation bomb,
garbage status lines, an endless body, a reset), and the others correctly. After a few
hundred hostile answers it turns good. The ledger: every SMS stored once or dead-lettered
(none lost, none both), lag 0, and /healthz answered throughout, since no answer can hold
the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pipeline_support import StreamProcess, committed, produce, read_topic, settings_for, sms_value
from support import eventually

from stream.devkit.stack import StackEndpoints
from stream.sms.parser import parse_sms

pytestmark = pytest.mark.stack

SMS_COUNT = 300
HOSTILE_ANSWERS = 200
"""Hostile answers served before the API turns good: each kind many times over."""


def _head(status: str, *lines: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *lines]) + "\r\n\r\n").encode()


def _bomb() -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    body = b"".join(packer.compress(bytes(1 << 20)) for _ in range(16)) + packer.flush()
    return _head("200 OK", "content-encoding: gzip", f"content-length: {len(body)}") + body


CHUNKED = _head("200 OK", "transfer-encoding: chunked")
HOSTILE: list[bytes | None] = [
    CHUNKED + b"-6\r\nabcdef\r\n0\r\n\r\n",
    CHUNKED + b"+2\r\nab\r\n0\r\n\r\n",
    _head("200 OK", "content-length: 3", "transfer-encoding: chunked") + b"3\r\n{}}\r\n0\r\n\r\n",
    _head("100 Continue") * 50 + _head("200 OK", "content-length: 2") + b"{}",
    _head("200 OK", *[f"x-{n}: y" for n in range(150)], "content-length: 2") + b"{}",
    _bomb(),
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "HTTP/1.1 2\u06600 OK\r\n\r\n".encode(),
    _head("200 OK") + b"x" * (2 << 20),  # over the body cap, ended by the close
    None,  # a reset before any answer
]
"""Answers after which the connection is closed (None: reset instead)."""


class HostileApi:
    """Every other call gets the next hostile answer until HOSTILE_ANSWERS were served."""

    def __init__(self) -> None:
        self.hostile_served = 0
        self.good_served = 0
        self._calls = itertools.count()
        self._hostile = itertools.cycle(HOSTILE)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                sms = orjson.loads(await reader.readexactly(length))
                if next(self._calls) % 2 == 0 and self.hostile_served < HOSTILE_ANSWERS:
                    self.hostile_served += 1
                    await self._hostile_answer(writer, next(self._hostile))
                    return
                body = orjson.dumps(parse_sms(sms["body"], sms["sender"]))
                writer.write(_head("200 OK", f"content-length: {len(body)}") + body)
                self.good_served += 1
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _hostile_answer(writer: asyncio.StreamWriter, wire: bytes | None) -> None:
        if wire is None:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        writer.write(wire)
        await writer.drain()


@asynccontextmanager
async def hostile_api() -> AsyncIterator[tuple[HostileApi, str]]:
    api = HostileApi()
    server = await asyncio.start_server(api.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield api, f"http://127.0.0.1:{port}/v1/parse"
    finally:
        server.close()


class HealthWatch:
    """Polls /healthz all along; after its first answer, counts the polls that got none."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.answered = 0
        self.missed = 0

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as http:
            while True:
                try:
                    ok = (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    ok = False
                if ok:
                    self.answered += 1
                elif self.answered:
                    self.missed += 1
                await asyncio.sleep(0.05)


async def test_a_hostile_api_then_a_good_one_loses_nothing_and_never_freezes(
    stack: StackEndpoints, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any,
    tmp_path: Path,
) -> None:
    topic = await new_topic(partitions=3)
    collection = mongo_db["messages"]
    async with hostile_api() as (api, url):
        settings = settings_for(
            stack, topic, mongo_db.name, unique_name("group"), processor="http", api_url=url
        )
        await produce(settings.kafka_bootstrap, topic, [sms_value(n) for n in range(SMS_COUNT)])
        process = StreamProcess(settings, tmp_path / "run.log")
        watch = HealthWatch(process.metrics_url)
        watching = asyncio.create_task(watch.run())
        try:
            await eventually(lambda: _true(api.hostile_served >= HOSTILE_ANSWERS), within=120,
                             what=f"{HOSTILE_ANSWERS} hostile answers served")
            dead: list[Any] = []

            async def settled() -> bool:
                dead[:] = await read_topic(settings.kafka_bootstrap, settings.dlq_topic)
                return await collection.count_documents({}) + len(dead) >= SMS_COUNT

            await eventually(settled, within=120, what="every SMS stored or dead-lettered")
            await eventually(lambda: _lag_zero(kafka_admin, settings), what="lag 0")
        finally:
            watching.cancel()
            with suppress(asyncio.CancelledError):
                await watching
            assert await process.stop() == 0
    stored_ids = set(await collection.distinct("_id"))
    dead_ids = {orjson.loads(record.value)["id"] for record in dead}
    assert await collection.count_documents({}) == len(stored_ids)  # none stored twice
    assert stored_ids | dead_ids == {f"sms-{n}" for n in range(SMS_COUNT)}  # none lost
    assert not stored_ids & dead_ids
    assert api.good_served > 0
    assert watch.answered > 0
    assert watch.missed == 0, f"/healthz missed {watch.missed} of {watch.answered} polls"
    log = (tmp_path / "run.log").read_text()
    assert "Traceback" not in log
    assert "exception was never retrieved" not in log


async def _true(value: bool) -> bool:
    return value


async def _lag_zero(admin: Any, settings: Any) -> bool:
    done = sum((await committed(admin, settings.group_id, settings.topic)).values())
    return done == SMS_COUNT
