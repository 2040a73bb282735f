"""The parse API's clients against a hostile upstream: a raw asyncio server over loopback.

Each case is an answer a broken or malicious upstream can send. For each, the call ends the
way the contract says (a typed HttpClientError for that call alone, or the right answer),
the client's event loop kept turning during the call (a ticker task in the same loop), and
the memory the call allocated stayed bounded (tracemalloc's peak). The client runs in an
event loop of its own, in a thread, so a client that freezes its loop fails the test
instead of freezing the server and the test run.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from stream.processors.apiclient import (
    MAX_BODY_BYTES,
    ApiClient,
    BadEncoding,
    ConnectionLost,
    HttpClientError,
    ProtocolFault,
    Reply,
    Timeout,
)
from stream.processors.httpclient import HttpClient
from stream.processors.httpxclient import HttpxClient

Script = Callable[[asyncio.StreamWriter], Awaitable[None]]
"""What the upstream does once it has read a request: writes, drips, resets or stalls."""

DEADLINE_S = 1.0
"""The calls' deadline: the cases that end by it take this long, so it is short."""
MEMORY_BOUND_BYTES = 8 * MAX_BODY_BYTES
"""What one hostile call may allocate: a few times the body cap, far below what the hostile
answers carry (40-64 MiB) or inflate to."""
TICK_S = 0.01
FROZEN_S = 10.0
"""A call not over by then froze its loop: the test fails instead of hanging."""


def _backend(name: str, url: str) -> ApiClient:
    if name == "httpx":
        return HttpxClient(url, {}, timeout_s=DEADLINE_S, connect_timeout_s=DEADLINE_S)
    return HttpClient(url, {}, timeout_s=DEADLINE_S, connect_timeout_s=DEADLINE_S)


BACKENDS = ["own", "httpx"]


def _head(status: str = "200 OK", *lines: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *lines]) + "\r\n\r\n").encode()


def _writes(*parts: bytes, close: bool = False) -> Script:
    async def script(writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
        if close:
            writer.close()

    return script


def _endless(head: bytes, piece: bytes) -> Script:
    """`head`, then `piece` as fast as the client reads, until it hangs up."""

    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(head)
        while True:
            writer.write(piece)
            await writer.drain()

    return script


def _drip(wire: bytes, every_s: float, size: int = 1) -> Script:
    async def script(writer: asyncio.StreamWriter) -> None:
        for start in range(0, len(wire), size):
            writer.write(wire[start : start + size])
            await writer.drain()
            await asyncio.sleep(every_s)

    return script


def _reset_after(head: bytes) -> Script:
    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(head)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # linger 0: an RST, not a FIN

    return script


async def _stall(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(FROZEN_S)


@functools.cache
def _bomb_body() -> bytes:
    """64 MiB of zeros gzipped to ~64 KiB, packed a MiB at a time (never 64 MiB at once)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(64)) + packer.flush()


async def _bomb(writer: asyncio.StreamWriter) -> None:
    body = _bomb_body()
    writer.write(_head("200 OK", "content-encoding: gzip", f"content-length: {len(body)}"))
    writer.write(body)
    await writer.drain()


def _every(piece: bytes, every_s: float) -> Script:
    """`piece` again and again, `every_s` apart, until the client hangs up."""

    async def script(writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(every_s)

    return script


CHUNKED = _head("200 OK", "transfer-encoding: chunked")


@dataclass(frozen=True)
class Case:
    script: Script
    expected: type[HttpClientError] | bytes
    """The own backend's outcome: an error class, or the body of a good answer."""
    httpx: type[HttpClientError] | bytes | None = None
    """The httpx backend's outcome where it differs (None: the same)."""


CASES: dict[str, Case] = {
    "negative-chunk-size": Case(_writes(CHUNKED + b"-6\r\nabcdef\r\n0\r\n\r\n"), ProtocolFault),
    "signed-chunk-size": Case(_writes(CHUNKED + b"+2\r\nab\r\n0\r\n\r\n"), ProtocolFault),
    "0x-chunk-size": Case(_writes(CHUNKED + b"0x2\r\nab\r\n0\r\n\r\n"), ProtocolFault),
    "underscore-chunk-size": Case(_writes(CHUNKED + b"0_2\r\nab\r\n0\r\n\r\n"), ProtocolFault),
    "huge-chunk-size": Case(_writes(CHUNKED + b"F" * 40 + b"\r\n"), ProtocolFault),
    "huge-declared-chunk": Case(
        _endless(CHUNKED + b"FFFFFFFFFFF\r\n", b"x" * 65536), ProtocolFault
    ),
    "unterminated-chunk": Case(_writes(CHUNKED + b"2\r\nabXX0\r\n\r\n"), ProtocolFault),
    "content-length-and-chunked": Case(
        _writes(
            _head("200 OK", "content-length: 3", "transfer-encoding: chunked")
            + b"3\r\nabc\r\n0\r\n\r\n"
        ),
        ProtocolFault,
    ),
    "1xx-flood": Case(_every(_head("100 Continue"), 0.001), ProtocolFault, httpx=Timeout),
    "header-flood": Case(
        _writes(_head("200 OK", *[f"x-{n}: y" for n in range(150)], "content-length: 0")),
        ProtocolFault,
    ),
    "endless-head": Case(_endless(b"HTTP/1.1 200 OK\r\n", b"x-a: b\r\n"), ProtocolFault),
    "endless-body-until-close": Case(_endless(_head(), b"x" * 65536), ProtocolFault),
    "endless-chunked-body": Case(
        _endless(CHUNKED, b"10000\r\n" + b"x" * 65536 + b"\r\n"), ProtocolFault
    ),
    "huge-content-length": Case(
        _endless(_head("200 OK", "content-length: 104857600"), b"x" * 65536), ProtocolFault
    ),
    "inflation-bomb": Case(
        _bomb,
        ProtocolFault,
    ),
    "unknown-encoding": Case(
        _writes(_head("200 OK", "content-encoding: br", "content-length: 2") + b"{}"), BadEncoding
    ),
    "non-ascii-status": Case(_writes("HTTP/1.1 2\u06600 OK\r\n\r\n".encode()), ProtocolFault),
    "garbage-status-line": Case(_writes(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), ProtocolFault),
    "reset-mid-answer": Case(
        _reset_after(_head("200 OK", "content-length: 10") + b"abc"), ConnectionLost
    ),
    "never-answers": Case(_stall, Timeout),
    "endless-drip-under-the-caps": Case(
        _drip(_head("200 OK", "content-length: 100000"), 0.05, size=1), Timeout
    ),
    "slow-drip-of-a-valid-answer": Case(
        _drip(_head("200 OK", "content-length: 11") + b'{"ok":true}', 0.002, size=3),
        b'{"ok":true}',
    ),
    "204-with-a-length": Case(_writes(_head("204 No Content", "content-length: 5")), b""),
    "capitalised-chunked": Case(
        _writes(_head("200 OK", "Transfer-Encoding: Chunked") + b"2\r\nok\r\n0\r\n\r\n"), b"ok"
    ),
}


class _Upstream:
    """Reads one request (head and Content-Length body), then runs the case's script."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.heads: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                await self.script(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def upstream(script: Script) -> AsyncIterator[tuple[_Upstream, str]]:
    raw = _Upstream(script)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield raw, f"http://127.0.0.1:{port}/v1/parse"
    finally:
        server.close()


@dataclass
class Observed:
    outcome: Reply | HttpClientError
    longest_gap_s: float
    ticks: int
    peak_bytes: int


def _call_in_own_loop(backend: str, url: str, calls: int) -> list[Observed]:
    """`calls` POSTs in a fresh event loop with a ticker beside them (run in a thread)."""

    async def main() -> list[Observed]:
        client = _backend(backend, url)
        observed = []
        try:
            for _ in range(calls):
                observed.append(await _observe(client))
        finally:
            await client.aclose()
        return observed

    return asyncio.run(main())


async def _observe(client: ApiClient) -> Observed:
    gaps = [0.0]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            gaps.append(now - last)
            ticks, last = ticks + 1, now

    ticking = asyncio.create_task(ticker())
    tracemalloc.start()
    tracemalloc.reset_peak()
    outcome: Reply | HttpClientError
    try:
        outcome = await client.post(b'{"id":"1"}', idempotency_key='"1/1"')
    except HttpClientError as exc:
        outcome = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        ticking.cancel()
    return Observed(outcome, max(gaps), ticks, peak)


async def _run(backend: str, script: Script, calls: int = 1) -> tuple[list[Observed], int]:
    async with upstream(script) as (raw, url):
        loop = asyncio.get_running_loop()
        result: asyncio.Future[list[Observed]] = loop.create_future()

        def run() -> None:
            try:
                observed = _call_in_own_loop(backend, url, calls)
            except BaseException as exc:  # noqa: BLE001 - handed to the test's loop
                loop.call_soon_threadsafe(result.set_exception, exc)
            else:
                loop.call_soon_threadsafe(result.set_result, observed)

        # A daemon thread: a client that freezes its loop must not hold up the run's exit.
        threading.Thread(target=run, daemon=True).start()
        try:
            observed = await asyncio.wait_for(result, FROZEN_S)
        except TimeoutError:
            pytest.fail(f"the client's event loop froze (no outcome in {FROZEN_S:.0f} s)")
        return observed, raw.connections


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
async def test_a_hostile_answer_ends_the_call_alone(backend: str, name: str) -> None:
    case = CASES[name]
    expected = case.httpx if backend == "httpx" and case.httpx is not None else case.expected
    _bomb_body()  # packed once, before any call's deadline runs
    (observed,), _ = await _run(backend, case.script)
    if isinstance(expected, bytes):
        assert isinstance(observed.outcome, Reply), observed.outcome
        assert observed.outcome.body == expected
    else:
        assert isinstance(observed.outcome, expected), repr(observed.outcome)
        assert "127.0.0.1" not in str(observed.outcome)
    # The loop kept turning: no step of the call held it for half the call's deadline.
    assert observed.longest_gap_s < DEADLINE_S / 2
    assert observed.peak_bytes < MEMORY_BOUND_BYTES


@pytest.mark.parametrize("backend", BACKENDS)
async def test_connection_close_in_capitals_is_not_reused(backend: str) -> None:
    answer = _head("200 OK", "Connection: Close", "content-length: 2") + b"ok"
    observed, connections = await _run(backend, _writes(answer, close=False), calls=2)
    assert [o.outcome.body for o in observed if isinstance(o.outcome, Reply)] == [b"ok", b"ok"]
    assert connections == 2


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_good_answer_after_a_hostile_one_on_the_same_server(backend: str) -> None:
    """A fault is that call's alone: the next call opens a clean connection and succeeds."""
    answers = iter([CHUNKED + b"-6\r\n", _head("200 OK", "content-length: 2") + b"ok"])

    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(next(answers))
        await writer.drain()

    observed, connections = await _run(backend, script, calls=2)
    assert isinstance(observed[0].outcome, ProtocolFault)
    assert isinstance(observed[1].outcome, Reply)
    assert observed[1].outcome.body == b"ok"
    assert connections == 2


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_good_answer_is_read_whole_and_its_connection_reused(backend: str) -> None:
    """The contract's good path, both backends: gzip decoded, headers by lower-case name,
    `User-Agent` and `Idempotency-Key` sent, one connection for consecutive calls."""
    packed = zlib.compress(b'{"ok":true}')
    answer = _head("200 OK", "Content-Encoding: deflate", f"content-length: {len(packed)}")

    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(answer + packed)
        await writer.drain()

    async with upstream(script) as (raw, url):
        client = _backend(backend, url)
        try:
            replies = [await client.post(b'{"id":"1"}', idempotency_key='"1/1"') for _ in range(3)]
        finally:
            await client.aclose()
    assert [(r.status, r.body) for r in replies] == [(200, b'{"ok":true}')] * 3
    assert replies[0].headers["content-encoding"] == "deflate"
    assert raw.connections == 1
    head = raw.heads[0].lower()
    assert b"user-agent: stream/" in head
    assert b'idempotency-key: "1/1"' in head
