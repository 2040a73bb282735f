"""The parse API's HTTP/1.1 client against raw TCP servers that answer exactly given bytes.

It protects what httpx did for us before: framing by length, chunks or the connection's
end, 1xx skipped, gzip decoded, keep-alive reuse without ever mixing two answers, the
keep-alive race retried once, and a timeout or a broken answer never left on a reused
connection.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from support import eventually

from stream.processors import httpclient
from stream.processors.apiclient import (
    BadEncoding,
    ConnectFailed,
    ConnectionLost,
    ProtocolFault,
    Timeout,
)
from stream.processors.httpclient import HttpClient

Answer = Callable[[int, bytes], bytes | None]
"""(request number on this server, request bytes) -> bytes to send, None to close."""


def _ok(body: bytes = b'{"ok":true}', extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


class RawServer:
    """Reads one request at a time (head + Content-Length body) and answers `answer`'s bytes."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                reply = self.answer(len(self.requests), request)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(
    answer: Answer, timeout_s: float = 5.0
) -> AsyncIterator[tuple[RawServer, HttpClient]]:
    raw = RawServer(answer)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    raw.port = server.sockets[0].getsockname()[1]
    client = HttpClient(
        f"http://127.0.0.1:{raw.port}/v1/parse?x=1",
        {"content-type": "application/json", "authorization": "Bearer t"},
        timeout_s=timeout_s,
        connect_timeout_s=1.0,
    )
    try:
        yield raw, client
    finally:
        await client.aclose()
        server.close()


async def test_sends_a_post_with_the_headers_and_reuses_the_connection() -> None:
    async with serving(lambda n, _: _ok(b'{"n":%d}' % n)) as (raw, client):
        first = await client.post(b'{"a":1}')
        second = await client.post(b'{"b":2}')
    assert (first.status, first.body, second.body) == (200, b'{"n":1}', b'{"n":2}')
    assert raw.connections == 1
    head, _, body = raw.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/parse?x=1 HTTP/1.1"
    assert {"content-type: application/json", "authorization: Bearer t"} <= set(lines)
    assert f"host: 127.0.0.1:{raw.port}" in lines
    assert "content-length: 7" in lines
    assert body == b'{"a":1}'


async def test_concurrent_calls_each_get_their_own_answer() -> None:
    async def slow_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            body = await reader.readexactly(int(head.rsplit(b"content-length: ", 1)[1].split()[0]))
            await asyncio.sleep(0.01)
            writer.write(_ok(body))
        writer.close()

    server = await asyncio.start_server(slow_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpClient(f"http://127.0.0.1:{port}/", {}, timeout_s=5.0, connect_timeout_s=1.0)
    try:
        bodies = [b"%d" % n for n in range(50)]
        replies = await asyncio.gather(*(client.post(b) for b in bodies))
        assert [r.body for r in replies] == bodies
        assert client.open_connections <= 50
    finally:
        await client.aclose()
        server.close()


@pytest.mark.parametrize(
    ("wire", "body"),
    [
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n",
            b"abcdefg",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nx-t: 1\r\n\r\n",
            b"ab",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b"after 100"), b"after 100"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
    ids=["chunked", "chunked-trailer", "skips-1xx", "204"],
)
async def test_frames_the_body(wire: bytes, body: bytes) -> None:
    async with serving(lambda n, _: wire) as (raw, client):
        assert (await client.post(b"{}")).body == body
        assert (await client.post(b"{}")).body == body  # and the connection is still in step
    assert raw.connections == 1


@asynccontextmanager
async def answering_once(wire: bytes) -> AsyncIterator[HttpClient]:
    """A server that answers each connection's first request with `wire`, then closes it."""

    async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(wire)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_and_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpClient(f"http://127.0.0.1:{port}/", {}, timeout_s=5.0, connect_timeout_s=1.0)
    try:
        yield client
    finally:
        await client.aclose()
        server.close()


async def test_a_body_until_the_connection_closes() -> None:
    async with answering_once(b"HTTP/1.1 200 OK\r\n\r\nuntil the end") as client:
        assert (await client.post(b"{}")).body == b"until the end"
        assert (await client.post(b"{}")).body == b"until the end"  # on a new connection


async def test_a_server_closing_mid_answer_is_a_protocol_fault() -> None:
    async with answering_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc") as client:
        with pytest.raises(ProtocolFault):
            await client.post(b"{}")


async def test_connection_close_is_not_reused() -> None:
    async with serving(lambda n, _: _ok(b"x", "connection: close\r\n")) as (raw, client):
        await client.post(b"{}")
        await client.post(b"{}")
    assert raw.connections == 2


async def test_gzip_is_decoded_and_garbage_is_bad_encoding() -> None:
    packed = gzip.compress(b'{"z":1}')
    answers = {
        1: _ok(packed, "content-encoding: gzip\r\n"),
        2: _ok(b"not gzip", "content-encoding: gzip\r\n"),
        3: _ok(b"x", "content-encoding: br\r\n"),
    }
    async with serving(lambda n, _: answers[n]) as (_, client):
        assert (await client.post(b"{}")).body == b'{"z":1}'
        with pytest.raises(BadEncoding):
            await client.post(b"{}")
        with pytest.raises(BadEncoding):
            await client.post(b"{}")


@pytest.mark.parametrize(
    "wire",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    ],
    ids=["not-http", "bad-header", "bad-length"],
)
async def test_a_malformed_answer_is_a_protocol_fault_and_the_connection_is_dropped(
    wire: bytes,
) -> None:
    answers = {1: wire, 2: _ok(b"fine")}
    async with serving(lambda n, _: answers[n]) as (raw, client):
        with pytest.raises(ProtocolFault):
            await client.post(b"{}")
        assert (await client.post(b"{}")).body == b"fine"
    assert raw.connections == 2


async def test_a_reused_connection_closed_before_answering_is_retried_once() -> None:
    answers = {1: _ok(b"first"), 2: None, 3: _ok(b"third")}  # None: close, answer nothing
    async with serving(lambda n, _: answers[n]) as (raw, client):
        assert (await client.post(b"{}")).body == b"first"
        replayed = await client.post(b"{}", idempotency_key='"sms-1/2"')
        assert replayed.body == b"third"  # the race: sent again, once
    assert (raw.connections, len(raw.requests)) == (2, 3)
    # The replay tells the API it is the same attempt: the same Idempotency-Key.
    assert all(b'idempotency-key: "sms-1/2"\r\n' in request for request in raw.requests[1:])


async def test_a_new_connection_closed_before_answering_is_not_retried() -> None:
    async with serving(lambda n, _: None) as (raw, client):
        with pytest.raises(ConnectionLost):
            await client.post(b"{}")
    assert len(raw.requests) == 1


async def test_a_timeout_drops_the_connection() -> None:
    answers: dict[int, bytes | None] = {2: _ok(b"second")}

    def answer(n: int, _: bytes) -> bytes | None:
        return answers.get(n, b"")  # the first request gets nothing at all

    async with serving(answer, timeout_s=0.2) as (raw, client):
        with pytest.raises(Timeout):
            await client.post(b"{}")
        assert (await client.post(b"{}")).body == b"second"
    assert raw.connections == 2


async def test_a_cancelled_call_never_leaves_its_answer_for_the_next() -> None:
    release = asyncio.Event()
    received = asyncio.Event()

    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(2)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            received.set()
            await release.wait()
            writer.write(_ok(b"late"))
        writer.close()

    server = await asyncio.start_server(late, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpClient(f"http://127.0.0.1:{port}/", {}, timeout_s=5.0, connect_timeout_s=1.0)
    try:
        task = asyncio.ensure_future(client.post(b"{}"))
        await asyncio.wait_for(received.wait(), 5)  # the request sent, its answer held back
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.open_connections == 0
        release.set()
        assert (await client.post(b"{}")).body == b"late"
    finally:
        await client.aclose()
        server.close()


async def test_refused_connection_is_connect_failed() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = HttpClient(f"http://127.0.0.1:{port}/", {}, timeout_s=1.0, connect_timeout_s=1.0)
    with pytest.raises(ConnectFailed) as caught:
        await client.post(b"{}")
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    assert str(port) not in str(caught.value)


def test_only_http_urls_are_taken() -> None:
    with pytest.raises(ValueError, match="http"):
        HttpClient("ftp://x/", {}, timeout_s=1.0, connect_timeout_s=1.0)


async def test_idle_connections_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpclient, "KEEPALIVE_EXPIRY_S", 0.05)
    async with serving(lambda n, _: _ok()) as (raw, client):
        await client.post(b"{}")
        assert client.open_connections == 1

        async def all_closed() -> bool:  # by the sweep, with no call to notice
            return client.open_connections == 0

        await eventually(all_closed, within=5.0, what="idle connection closed")
        await client.post(b"{}")
    assert raw.connections == 2
