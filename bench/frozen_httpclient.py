"""A small HTTP/1.1 client for the parse API: one origin, keep-alive connections, POST only.

Frozen, bench-only: the hand-written client that stream/processors/httpclient.py (h11-based)
replaced, kept unchanged as `http-cost`'s baseline. Never used to serve: its parser has the
defects tests/test_http_hostile.py covers.

Why our own: the limiter paces calls to the millisecond, and every microsecond of CPU
between its grant and the socket write is jitter a strict rate limiter sees. httpx cost
1.8 ms of CPU per call here (1.2 ms of it in httpcore, h11 and anyio), aiohttp 0.3 ms; this
client, an asyncio Protocol writing prebuilt request bytes, about 0.1 ms. The job is
narrow enough to do in full: HTTP/1.1 over TCP or TLS (the system's CA store), bodies
framed by Content-Length, chunked or the connection's end, gzip and deflate decoded, 1xx
answers skipped. Left out on purpose: redirects (a 3xx is an answer, like httpx by
default), proxies, cookies, HTTP/2.

Connections are opened on demand and kept while idle for at most KEEPALIVE_EXPIRY_S; the
processor's limiter bounds the calls in flight, and so the connections. A reused
connection that the server closed before answering is retried once on a new one: that is
the keep-alive race, not a fault of the upstream.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "BadEncoding",
    "ConnectFailed",
    "HttpClient",
    "HttpClientError",
    "ProtocolFault",
    "Reply",
    "Timeout",
]

logger = logging.getLogger(__name__)

KEEPALIVE_EXPIRY_S = 5.0
"""An idle connection older than this is closed, not reused: servers close idle ones
after 5-75 s, and reusing one they are closing costs a failed call."""
MAX_HEAD_BYTES = 64 << 10
"""A response head larger than this is not from a parse API."""
MAX_BODY_BYTES = 16 << 20
"""A parse result is a few hundred bytes; 16 MiB bounds what a broken upstream can cost."""


class HttpClientError(Exception):
    """A call that got no usable answer; the message names neither URL nor token."""


class ConnectFailed(HttpClientError):
    """No connection: refused, unreachable, DNS or TLS failure (the cause is chained)."""


class Timeout(HttpClientError):
    """No complete answer within the timeout (connecting included)."""


class ProtocolFault(HttpClientError):
    """The connection broke mid-answer, or the answer is not HTTP/1.x."""


class BadEncoding(HttpClientError):
    """The body's Content-Encoding is unknown or does not decode."""


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: status, headers by lower-case name (repeats joined by ", "), body."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Parsed:
    """What `_parse` found at the head of the receive buffer: one whole answer."""

    reply: Reply
    consumed: int
    keep_alive: bool


def _decoded(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BadEncoding(f"unsupported Content-Encoding {encoding!r}")
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    try:
        return zlib.decompress(body, wbits)
    except zlib.error:
        if encoding == "deflate":  # some servers send raw deflate without the zlib header
            try:
                return zlib.decompress(body, -zlib.MAX_WBITS)
            except zlib.error:
                pass
        raise BadEncoding(f"body does not decode as {encoding}") from None


def _chunked(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """The body of a chunked message starting at `start`, and where it ends; None if partial."""
    parts: list[bytes] = []
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        try:
            size = int(bytes(buffer[position:line_end]).split(b";", 1)[0], 16)
        except ValueError:
            raise ProtocolFault("malformed chunk size") from None
        position = line_end + 2
        if size == 0:
            while True:  # trailers, up to an empty line
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    return None
                empty = line_end == position
                position = line_end + 2
                if empty:
                    return b"".join(parts), position
        if len(buffer) < position + size + 2:
            return None
        parts.append(bytes(buffer[position : position + size]))
        position += size + 2
        if position - start > MAX_BODY_BYTES:
            raise ProtocolFault("body over the size limit")


def _parse(buffer: bytearray, eof: bool) -> _Parsed | None:
    """One whole answer at the head of `buffer` (1xx skipped), or None until more arrives."""
    start = 0
    while True:
        head_end = buffer.find(b"\r\n\r\n", start)
        if head_end < 0:
            if len(buffer) - start > MAX_HEAD_BYTES:
                raise ProtocolFault("response head over the size limit")
            return None
        lines = bytes(buffer[start:head_end]).decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise ProtocolFault("not an HTTP/1.x response")
        status = int(code)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolFault("malformed header line")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        body_start = head_end + 4
        if 100 <= status < 200:
            start = body_start
            continue
        keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "")
        if "chunked" in headers.get("transfer-encoding", ""):
            framed = _chunked(buffer, body_start)
            if framed is None:
                return None
            body, end = framed
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ProtocolFault("malformed Content-Length") from None
            if not 0 <= length <= MAX_BODY_BYTES:
                raise ProtocolFault("Content-Length out of range")
            end = body_start + length
            if len(buffer) < end:
                return None
            body = bytes(buffer[body_start:end])
        elif status in (204, 304):
            body, end = b"", body_start
        else:  # delimited by the connection's end
            if not eof:
                return None
            body, end, keep_alive = bytes(buffer[body_start:]), len(buffer), False
        body = _decoded(body, headers.get("content-encoding", "").strip().lower())
        return _Parsed(Reply(status, headers, body), end, keep_alive)


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.reusable = True
        self._buffer = bytearray()
        self._waiter: asyncio.Future[_Parsed] | None = None
        self._received = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._received = True
        self._buffer += data
        self._answer(eof=False)

    def eof_received(self) -> bool | None:
        self.reusable = False
        self._answer(eof=True)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._received:
                self._answer(eof=True)
            if not waiter.done():
                waiter.set_exception(_Lost(answered_any=self._received))

    def _answer(self, *, eof: bool) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            if self._buffer:  # bytes nobody asked for: the connection is out of step
                self.reusable = False
            return
        try:
            parsed = _parse(self._buffer, eof)
        except HttpClientError as exc:
            self.reusable = False
            waiter.set_exception(exc)
            return
        if parsed is None:
            if eof:
                waiter.set_exception(_Lost(answered_any=self._received))
            return
        del self._buffer[: parsed.consumed]
        if not parsed.keep_alive or self._buffer:
            self.reusable = False
        waiter.set_result(parsed)

    async def exchange(self, request: bytes, timeout_s: float) -> Reply:
        """Send `request`, wait for the whole answer; aborts the connection unless answered."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Parsed] = loop.create_future()
        self._waiter, self._received = waiter, False
        timer = loop.call_later(timeout_s, _expire, waiter)
        try:
            self.transport.write(request)
            parsed = await waiter
        except BaseException:
            self.reusable = False
            self.transport.abort()
            raise
        finally:
            timer.cancel()
            self._waiter = None
        return parsed.reply


class _Lost(ProtocolFault):
    """The server closed the connection before a whole answer."""

    def __init__(self, *, answered_any: bool) -> None:
        super().__init__("connection closed before a whole answer")
        self.answered_any = answered_any


def _expire(waiter: asyncio.Future[_Parsed]) -> None:
    if not waiter.done():
        waiter.set_exception(Timeout("no answer within the timeout"))


class HttpClient:
    """POSTs bodies to one URL over a pool of keep-alive connections."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout_s: float,
        connect_timeout_s: float,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an http:// or https:// URL with a host is required")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        authority = parts.netloc.rpartition("@")[2]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"host: {authority}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._prefix = ("\r\n".join(lines) + "\r\ncontent-length: ").encode("latin-1")
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def post(self, body: bytes) -> Reply:
        """One POST; raises a HttpClientError subclass when no usable answer came."""
        request = b"%s%d\r\n\r\n%s" % (self._prefix, len(body), body)
        deadline = time.monotonic() + self._timeout_s
        connection, reused = await self._take()
        try:
            reply = await connection.exchange(request, deadline - time.monotonic())
        except _Lost as exc:
            self._open.discard(connection)
            if not reused or exc.answered_any:
                raise
            connection, _ = await self._take(fresh=True)  # the keep-alive race: once more
            try:
                reply = await connection.exchange(request, deadline - time.monotonic())
            except BaseException:
                self._open.discard(connection)
                raise
        except BaseException:
            self._open.discard(connection)
            raise
        self._release(connection)
        return reply

    async def aclose(self) -> None:
        """Close every connection; later calls raise ConnectFailed."""
        self._closed = True
        for connection in list(self._open):
            if connection.transport is not None:
                connection.transport.abort()
        self._open.clear()
        self._idle.clear()

    async def _take(self, *, fresh: bool = False) -> tuple[_Connection, bool]:
        if self._closed:
            raise ConnectFailed("client closed")
        now = time.monotonic()
        while self._idle and not fresh:
            connection = self._idle.pop()
            if connection.reusable and now - connection.idle_since < KEEPALIVE_EXPIRY_S:
                return connection, True
            self._close(connection)
        return await self._connect(), False

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, connection = await loop.create_connection(
                    _Connection,
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls else None,
                )
        except TimeoutError:
            raise Timeout("connecting timed out") from None
        except OSError as exc:  # ssl.SSLError and socket.gaierror are OSErrors
            raise ConnectFailed(f"cannot connect: {type(exc).__name__}") from exc
        self._open.add(connection)
        logger.debug("parse API connection opened", extra={"connections": len(self._open)})
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.reusable and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            self._close(connection)

    def _close(self, connection: _Connection) -> None:
        self._open.discard(connection)
        if connection.transport is not None:
            connection.transport.close()
