"""The metrics/probe server against hostile clients: slowloris, floods, huge heads.

The port is open to the whole cluster; none of these may slow the process or exhaust its
descriptors, and a probe (a plain GET /healthz on a new connection) must get through all
along. Each test asserts the hostile client's fate and that a probe was answered meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from stream.observability.httpserver import HttpServer, Request, Response, text_response

PROBE = b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"


async def _healthz(request: Request) -> Response:
    return text_response("ok")


@asynccontextmanager
async def serving(**limits: Any) -> AsyncIterator[HttpServer]:
    async with HttpServer({("GET", "/healthz"): _healthz}, **limits) as server:
        yield server


async def _probe(server: HttpServer) -> bytes:
    """A kubelet-like probe: a new connection, one GET, the whole answer (within 5 s)."""
    async with asyncio.timeout(5.0):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(PROBE)
            return await reader.read()
        finally:
            writer.close()


async def _open(server: HttpServer, first: bytes = b"") -> tuple[Any, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    if first:
        writer.write(first)
        await writer.drain()
    return reader, writer


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closed the connection (EOF or reset), within 5 s."""
    async with asyncio.timeout(5.0):
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
    return True


async def test_a_slowloris_is_cut_at_the_request_deadline_while_probes_pass() -> None:
    async with serving(request_timeout_s=0.3) as server:
        reader, writer = await _open(server, b"GET /healthz HTTP/1.1\r\n")

        async def drip() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(100):
                    writer.write(b"x-a: b\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.05)

        dripping = asyncio.create_task(drip())
        assert (await _probe(server)).startswith(b"HTTP/1.1 200")
        assert await _closed_by_server(reader)
        dripping.cancel()
        writer.close()


async def test_at_the_connection_cap_the_oldest_idle_connection_makes_room() -> None:
    async with serving(max_connections=4) as server:
        held = [await _open(server) for _ in range(4)]
        await asyncio.sleep(0)  # let the server register them
        assert (await _probe(server)).startswith(b"HTTP/1.1 200")
        assert await _closed_by_server(held[0][0])  # the oldest idle one
        for _, writer in held:
            writer.close()


async def test_at_the_per_peer_cap_the_peers_oldest_idle_connection_makes_room() -> None:
    async with serving(max_connections_per_peer=3) as server:
        held = [await _open(server) for _ in range(3)]
        assert (await _probe(server)).startswith(b"HTTP/1.1 200")
        assert await _closed_by_server(held[0][0])
        for _, writer in held:
            writer.close()


async def test_at_the_cap_with_every_connection_busy_the_new_one_is_closed() -> None:
    async with serving(max_connections=2, request_timeout_s=5.0) as server:
        busy = [await _open(server, b"GET /healthz HTTP/1.1\r\n") for _ in range(2)]
        reader, writer = await _open(server)
        assert await _closed_by_server(reader)
        writer.close()
        for _, held in busy:
            held.close()
        assert (await _probe(server)).startswith(b"HTTP/1.1 200")  # room again once they left


async def test_a_connection_flood_leaves_the_probe_an_answer() -> None:
    async with serving(max_connections=16) as server:
        flood = [await _open(server) for _ in range(64)]
        assert (await _probe(server)).startswith(b"HTTP/1.1 200")
        for _, writer in flood:
            writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nhost: t\r\n" + b"x-a: b\r\n" * 150 + b"\r\n", b"431"),
        (b"GET /healthz HTTP/1.1\r\nhost: t\r\nx: " + b"a" * 40_000 + b"\r\n\r\n", b"431"),
        (b"POST /healthz HTTP/1.1\r\nhost: t\r\ncontent-length: 99999999\r\n\r\n", b"413"),
        (
            b"POST /healthz HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n"
            b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"411",
        ),
        (b"GET /healthz HTTP/1.1\r\nhost: t\r\nbad header\r\n\r\n", b"400"),
        ("GET /h\u00e9 HTTP/1.1\r\nhost: t\r\n\r\n".encode(), b"400"),
    ],
    ids=["header-flood", "huge-header", "huge-body", "cl-and-te", "bad-header", "non-ascii"],
)
async def test_a_hostile_request_is_refused_and_closed(request_bytes: bytes, status: bytes) -> None:
    async with serving() as server:
        reader, writer = await _open(server, request_bytes)
        answer = await reader.read()
        writer.close()
        assert answer.split(b" ", 2)[1] == status
        assert (await _probe(server)).startswith(b"HTTP/1.1 200")


async def test_an_endless_head_is_cut_at_the_head_cap_with_bounded_memory() -> None:
    async with serving() as server:
        reader, writer = await _open(server, b"GET /healthz HTTP/1.1\r\n")
        tracemalloc.start()
        try:
            with contextlib.suppress(ConnectionError):
                for _ in range(256):  # 4 MiB of header lines, 16 KiB at a time
                    writer.write(b"x-a: " + b"b" * 16_378 + b"\r\n")
                    await writer.drain()
                    if reader.at_eof():
                        break
            try:
                answer = await reader.read()
            except ConnectionError:
                answer = b""  # the 431 was sent, but our unread bytes turned the close into a reset
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            writer.close()
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431")
        assert peak < 2 << 20
        assert (await _probe(server)).startswith(b"HTTP/1.1 200")


async def test_a_client_that_stops_reading_a_large_answer_is_cut_at_the_request_deadline() -> None:
    big = b"x" * (32 << 20)  # far beyond the loopback socket buffers of both ends

    async def _large(request: Request) -> Response:
        return Response(body=big)

    routes = {("GET", "/healthz"): _healthz, ("GET", "/large"): _large}
    async with HttpServer(routes, max_connections=1, request_timeout_s=0.5) as server:
        stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.setblocking(False)
        await asyncio.get_running_loop().sock_connect(stalled, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=stalled)
        writer.write(b"GET /large HTTP/1.1\r\nhost: t\r\n\r\n")
        await writer.drain()
        answered = b""
        async with asyncio.timeout(10.0):  # the cap's one slot frees once the stall is cut
            while not answered.startswith(b"HTTP/1.1 200"):
                await asyncio.sleep(0.05)  # poll interval
                with contextlib.suppress(ConnectionError):  # refused while the cap is full
                    answered = await _probe(server)
        assert await _closed_by_server(reader)
        writer.close()
