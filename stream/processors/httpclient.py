"""The parse API's HTTP/1.1 client: h11 parses, our asyncio code does the I/O and the pool.

Why this split: the limiter paces calls to the millisecond, and every microsecond of CPU
between its grant and the socket write is jitter it sees; httpx costs ~1 ms per call
(httpcore scans its pool on every request, anyio wraps every read). The framing of HTTP
answers, though, is where hostile and buggy upstreams hurt (chunk sizes, lengths, 1xx
floods, smuggling): that is left to h11, a sans-IO parser maintained with public security
advisories, and on top of it we enforce hard limits on everything an answer can carry
(each a constant, here or in `apiclient`). Our code keeps the asyncio Protocol, the
keep-alive pool, one total deadline per call, a streaming, capped gzip/deflate inflater
(`apiclient.Inflater`, shared with the httpx backend), and the request bytes:
a head prebuilt (and validated by h11) once per client, with only the length, the key and
the body added per call. h11 is told each request's framing (method, target, Host,
Content-Length, body), all it needs to read the answer; building each request through h11
cost ~25 µs more per call.

What it does: POST to one origin over TCP or TLS (the system's CA store), happy eyeballs,
keep-alive connections closed after KEEPALIVE_EXPIRY_S idle, a reused connection that the
server closed before answering sent once more (the keep-alive race; the replay carries the
same `Idempotency-Key`, so the API can tell it from a new attempt). Left out on purpose:
redirects (a 3xx is an answer), proxies, client certificates, cookies, HTTP/2; the httpx
backend (`httpxclient.py`) covers proxies and client certificates.

Every way a call can fail raises an `apiclient.HttpClientError` subclass; nothing raised in
a protocol callback reaches the event loop's exception handler.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import h11

from stream.processors.apiclient import (
    KEEPALIVE_EXPIRY_S,
    MAX_BODY_BYTES,
    MAX_HEADERS,
    USER_AGENT,
    ConnectFailed,
    ConnectionLost,
    HttpClientError,
    Inflater,
    InvalidUrl,
    ProtocolFault,
    Reply,
    Timeout,
    check_head,
    parse_url,
)

__all__ = ["HAPPY_EYEBALLS_DELAY_S", "MAX_HEAD_BYTES", "MAX_INFORMATIONAL", "HttpClient"]

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 << 10
"""A response head (status line and headers; each 1xx head too) larger than this is not
from a parse API. h11 stops buffering at this size, so a head never dripping its blank line
costs at most this much memory."""
MAX_INFORMATIONAL = 5
"""1xx heads before the answer: h11 skips any number of them, so a flood is counted here."""
HAPPY_EYEBALLS_DELAY_S = 0.25
"""RFC 8305's delay before trying the next address: a broken IPv6 route costs this, not
the whole connect timeout."""


def _headers(fields: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in fields:
        name, value = raw_name.decode("ascii"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


class _Reading:
    """The answer being read for one request: h11's events, counted against the limits."""

    __slots__ = ("body", "decoder", "header_lines", "headers", "heads", "size", "status", "waiter")

    def __init__(self, waiter: asyncio.Future[Reply]) -> None:
        self.waiter = waiter
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.decoder: Inflater | None = None
        self.size = 0
        self.heads = 0
        self.header_lines = 0


class _Lost(ConnectionLost):
    def __init__(self, *, answered_any: bool) -> None:
        super().__init__("connection closed before a whole answer")
        self.answered_any = answered_any


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time; h11 tracks its state."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.idle_since = 0.0
        self.reusable = True
        self._reading: _Reading | None = None
        self._received = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._received = True
        self._feed(data)

    def eof_received(self) -> bool | None:
        self.reusable = False
        self._feed(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        reading = self._reading
        if reading is not None and not reading.waiter.done():
            reading.waiter.set_exception(_Lost(answered_any=self._received))

    def _feed(self, data: bytes) -> None:
        reading = self._reading
        if reading is None or reading.waiter.done():
            self._abort()  # bytes nobody asked for: the connection is out of step
            return
        if not data and not self._received:
            reading.waiter.set_exception(_Lost(answered_any=False))
            return
        try:
            self.h11.receive_data(data)
            reply = self._events(reading)
        except HttpClientError as exc:
            self._abort()
            reading.waiter.set_exception(exc)
        except h11.RemoteProtocolError as exc:
            self._abort()
            reading.waiter.set_exception(ProtocolFault(f"malformed answer: {exc}"))
        except Exception as exc:  # noqa: BLE001 - raised here it would reach the loop's handler and the call would wait out its deadline
            self._abort()
            reading.waiter.set_exception(ProtocolFault(f"unreadable answer: {exc!r}"))
        else:
            if reply is not None:
                reading.waiter.set_result(reply)

    def _events(self, reading: _Reading) -> Reply | None:
        """Everything h11 can make of the bytes so far; the Reply once the answer is whole."""
        connection = self.h11
        while True:
            event = connection.next_event()
            kind = type(event)
            if kind is h11.Data:
                data = event.data  # type: ignore[union-attr]
                reading.size += len(data)
                if reading.size > MAX_BODY_BYTES:
                    raise ProtocolFault("body over the size limit")
                reading.body.append(reading.decoder.feed(data) if reading.decoder else data)
            elif kind is h11.Response or kind is h11.InformationalResponse:
                self._head(reading, event)  # type: ignore[arg-type]
            elif kind is h11.EndOfMessage:
                return self._done(reading)
            elif event is h11.NEED_DATA:
                return None
            else:  # ConnectionClosed, or PAUSED (a second answer: out of step)
                raise _Lost(answered_any=self._received)

    @staticmethod
    def _head(reading: _Reading, event: h11.Response | h11.InformationalResponse) -> None:
        reading.heads += 1
        reading.header_lines += len(event.headers)
        if reading.heads > MAX_INFORMATIONAL + 1:
            raise ProtocolFault("too many 1xx answers")
        if reading.header_lines > MAX_HEADERS:
            raise ProtocolFault("too many header lines")
        # h11 caps only a head still arriving; one that came whole in a read is measured here.
        if sum(len(name) + len(value) + 4 for name, value in event.headers) > MAX_HEAD_BYTES:
            raise ProtocolFault("response head over the size limit")
        if isinstance(event, h11.InformationalResponse):
            return
        headers = _headers(event.headers)
        check_head(headers, event.status_code)
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            reading.decoder = Inflater(encoding)
        reading.status, reading.headers = event.status_code, headers

    def _done(self, reading: _Reading) -> Reply:
        body = b"".join(reading.body)
        if reading.decoder is not None:
            body += reading.decoder.finish()
        connection = self.h11
        if connection.our_state is h11.DONE and connection.their_state is h11.DONE:
            if connection.trailing_data[0]:
                self.reusable = False  # bytes past the answer: never trust this connection
            else:
                connection.start_next_cycle()
        else:
            self.reusable = False
        return Reply(reading.status, reading.headers, body)

    def _abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    async def exchange(self, request: _Request, deadline: float) -> Reply:
        """Send `request`, wait for the whole answer until `deadline` (the loop's clock);
        any failure aborts the connection. h11 is told the request's framing (what it
        serialises of it is the same framing we send, so it is not sent twice)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Reply] = loop.create_future()
        self._reading, self._received = _Reading(waiter), False
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            try:
                parser = self.h11
                parser.send(request.framing)
                parser.send_with_data_passthrough(request.data)
                parser.send(_END)
            except h11.LocalProtocolError as exc:  # a connection h11 sees out of step
                raise ProtocolFault(f"cannot send on this connection: {exc}") from None
            self.transport.write(request.wire)
            return await waiter
        except BaseException:
            self._abort()
            raise
        finally:
            timer.cancel()
            self._reading = None


def _expire(waiter: asyncio.Future[Reply]) -> None:
    if not waiter.done():
        waiter.set_exception(Timeout("no answer within the timeout"))


_END = h11.EndOfMessage()
"""Events are immutable: one end-of-message serves every request."""
MAX_FRAMINGS = 4096
"""Request framings kept, one per body length: SMS bodies span a few hundred lengths."""


@dataclass(frozen=True, slots=True)
class _Request:
    """One POST: its framing as h11 events (method, target, Host, Content-Length and the
    body, which is what h11's state machine needs to read the answer right), and the bytes
    on the wire: the head prebuilt once per client, plus the length, the key and the body."""

    framing: h11.Request
    data: h11.Data
    wire: bytes


class HttpClient:
    """POSTs bodies to one URL over a pool of keep-alive connections; h11 parses."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout_s: float,
        connect_timeout_s: float,
    ) -> None:
        self._url_fault: InvalidUrl | None = None
        try:
            host, port, tls, authority, target = parse_url(url)
        except InvalidUrl as exc:  # raised by every call: a halt naming STREAM_API_URL
            self._url_fault = exc
            host, port, tls, authority, target = "", 0, False, "", "/"
        self._host, self._port = host, port
        self._tls = ssl.create_default_context() if tls else None
        self._target = target.encode("ascii", "replace")
        fields = {"host": authority, "user-agent": USER_AGENT} | dict(headers)
        self._host_field = (b"host", authority.encode("latin-1"))
        encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fields.items()]
        if self._url_fault is None:
            try:  # h11 validates the static head once; each call adds only digits and a key
                h11.Request(method=b"POST", target=self._target, headers=encoded)
            except h11.LocalProtocolError as exc:
                self._url_fault = InvalidUrl(f"the request cannot be sent: {exc}")
        self._prefix = b"POST %s HTTP/1.1\r\n%s" % (
            self._target,
            b"".join(b"%s: %s\r\n" % field for field in encoded),
        )
        self._framings: dict[int, h11.Request] = {}
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def post(self, body: bytes, *, idempotency_key: str | None = None) -> Reply:
        """One POST within the call's deadline; raises a HttpClientError subclass when no
        usable answer came. `idempotency_key` is sent as `Idempotency-Key`."""
        if self._url_fault is not None:
            raise self._url_fault
        length = len(body)
        framing = self._framings.get(length)
        if framing is None:
            framing = h11.Request(
                method=b"POST",
                target=self._target,
                headers=[self._host_field, (b"content-length", b"%d" % length)],
            )
            if len(self._framings) < MAX_FRAMINGS:
                self._framings[length] = framing
        key = b""
        if idempotency_key is not None:
            if not (idempotency_key.isascii() and idempotency_key.isprintable()):
                raise ProtocolFault("an Idempotency-Key must be printable ASCII")
            key = b"idempotency-key: %s\r\n" % idempotency_key.encode("ascii")
        wire = b"%s%scontent-length: %d\r\n\r\n%s" % (self._prefix, key, length, body)
        request = _Request(framing, h11.Data(data=body), wire)
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        connection, reused = await self._take(deadline)
        try:
            reply = await connection.exchange(request, deadline)
        except _Lost as exc:
            self._open.discard(connection)
            if not reused or exc.answered_any:
                raise
            connection, _ = await self._take(deadline, fresh=True)  # the keep-alive race
            try:
                reply = await connection.exchange(request, deadline)
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
        if self._sweep is not None:
            self._sweep.cancel()
        for connection in list(self._open):
            if connection.transport is not None:
                connection.transport.abort()
        self._open.clear()
        self._idle.clear()

    async def _take(self, deadline: float, *, fresh: bool = False) -> tuple[_Connection, bool]:
        if self._closed:
            raise ConnectFailed("client closed")
        now = asyncio.get_running_loop().time()
        while self._idle and not fresh:
            connection = self._idle.pop()
            if connection.reusable and now - connection.idle_since < KEEPALIVE_EXPIRY_S:
                return connection, True
            self._close(connection)
        return await self._connect(deadline), False

    async def _connect(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + self._connect_timeout_s)):
                _, connection = await loop.create_connection(
                    _Connection,
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls else None,
                    happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S,
                )
        except TimeoutError:
            raise Timeout("connecting timed out") from None
        except UnicodeError:
            raise InvalidUrl("the host name cannot be encoded") from None
        except OSError as exc:  # ssl.SSLError and socket.gaierror are OSErrors
            raise ConnectFailed(f"cannot connect: {type(exc).__name__}") from exc
        self._open.add(connection)
        logger.debug("parse API connection opened", extra={"connections": len(self._open)})
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.reusable and not self._closed:
            loop = asyncio.get_running_loop()
            connection.idle_since = loop.time()
            self._idle.append(connection)
            if self._sweep is None:
                self._sweep = loop.call_later(KEEPALIVE_EXPIRY_S, self._expire_idle)
        else:
            self._close(connection)

    def _expire_idle(self) -> None:
        """Close connections idle for KEEPALIVE_EXPIRY_S; the oldest are first in the list."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle and now - self._idle[0].idle_since >= KEEPALIVE_EXPIRY_S:
            self._close(self._idle.pop(0))
        self._sweep = loop.call_later(KEEPALIVE_EXPIRY_S, self._expire_idle) if self._idle else None

    def _close(self, connection: _Connection) -> None:
        self._open.discard(connection)
        if connection.transport is not None:
            connection.transport.close()
