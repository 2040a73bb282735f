"""A minimal asyncio HTTP/1.1 server: /metrics, /healthz, /readyz, and the reference upstream.

Why not a framework: its users need only exact-path routing, small bodies and keep-alive.
Requests are parsed by h11 (the sans-IO parser under httpx, with public security
advisories), not by hand: the port is open to the whole cluster. What it does:

- persistent HTTP/1.1 connections, requests on one connection answered in order
  (HTTP/1.0 ones are closed after their answer);
- bodies framed by Content-Length only: `Transfer-Encoding` gets 411 and the connection is
  closed;
- limits, so that no client (a slowloris, a connection flood, a huge head) can slow the
  process or exhaust its file descriptors: the request head (431) and its header lines
  (431), the body (413), connections in total and per peer (at a cap the oldest idle
  connection is closed to make room, so the kubelet's probes still get through; with none
  idle the new one is closed), an idle timeout between requests and a deadline for a whole
  request once its first byte arrived;
- a handler whose client disconnects is cancelled, so a slow or never-answering handler
  does not outlive its caller;
- graceful close: stop accepting, drop idle connections, let requests in progress finish
  within a grace period, then cancel what remains.

Handlers are `async def handler(request: Request) -> Response`; an exception becomes a 500
(logged), except `Abort`, which drops the connection without an answer.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

import h11
import orjson

from stream.errors import PortInUse

__all__ = [
    "Abort",
    "Handler",
    "HttpServer",
    "Request",
    "Response",
    "Routes",
    "json_response",
    "text_response",
]

logger = logging.getLogger(__name__)

# 1 MiB bodies: an SMS request is a few KiB; anything larger is a mistake or an attack.
DEFAULT_MAX_BODY_BYTES = 1 << 20
# 16 KiB heads, like common proxies; a longer head is answered 431.
DEFAULT_MAX_HEAD_BYTES = 16 << 10
# Longer than the clients' 5 s keep-alive expiry (ours, httpx's), so they close idle ones first
# and never reuse one the server is closing; also bounds a request that trickles in.
DEFAULT_IDLE_TIMEOUT_S = 30.0
# A request's head and body must arrive within this from its first byte: a slowloris
# dripping a byte at a time holds a connection no longer.
DEFAULT_REQUEST_TIMEOUT_S = 10.0
# Header lines of one request: browsers and probes send ~15.
DEFAULT_MAX_HEADERS = 100
# Connections in total: well under a container's descriptor limit (1024 by default).
DEFAULT_MAX_CONNECTIONS = 256
# Connections from one address: a scraper, a probe and a console user need a few each.
DEFAULT_MAX_CONNECTIONS_PER_PEER = 64
# Time requests in progress get to finish on close before they are cancelled.
DEFAULT_SHUTDOWN_GRACE_S = 5.0
# Time a closing connection gets to flush its last answer to a peer that stopped reading.
_CLOSE_TIMEOUT_S = 1.0
_READ_CHUNK = 64 << 10
_REASONS = {status.value: status.phrase for status in HTTPStatus}


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request; header names are lower-case, repeated headers joined by ", "."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; raises `orjson.JSONDecodeError` (a ValueError) if it is not."""
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class Response:
    """What a handler returns; Content-Length and Connection are added by the server."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


Handler = Callable[[Request], Coroutine[Any, Any, Response]]
Routes = Mapping[tuple[str, str], Handler]


class Abort(Exception):
    """Raised by a handler to close the connection without answering (fault injection)."""


def json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """`obj` serialised with orjson, with a JSON content type."""
    merged = {"content-type": "application/json"}
    if headers:
        merged.update(headers)
    return Response(status, merged, orjson.dumps(obj))


def text_response(
    text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    return Response(status, {"content-type": content_type}, text.encode())


class _BadRequest(Exception):
    """The request cannot be framed or is over a limit: answer `status`, then close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True, eq=False)
class _Connection:
    task: asyncio.Task[None]
    peer: str
    idle: bool = True
    idle_since: float = 0.0


def _encode(response: Response, keep_alive: bool) -> bytes:
    """The bytes of an answer h11 can no longer send (its state is ERROR): errors only."""
    status = response.status
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
    head.append(f"content-length: {len(response.body)}\r\n")
    head.extend(f"{name}: {value}\r\n" for name, value in response.headers.items())
    if not keep_alive:
        head.append("connection: close\r\n")
    head.append("\r\n")
    return "".join(head).encode("latin-1") + response.body


def _request_of(event: h11.Request, body: bytes) -> Request:
    headers: dict[str, str] = {}
    for raw_name, raw_value in event.headers:
        name, value = raw_name.decode("ascii"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    path, _, query = event.target.decode("latin-1").partition("?")
    return Request(event.method.decode("ascii"), path, query, headers, body)


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    """Close, flushing what is buffered; abort if a peer that stopped reading blocks that."""
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except ConnectionError:
        pass


class HttpServer:
    """`async with HttpServer(routes, host, port) as server:` serves until the block ends.

    `routes` maps `(method, path)` to a handler; a known path with another method is
    answered 405 (with Allow), an unknown path 404. Port 0 picks a free port: read
    `server.port` after entering.
    """

    def __init__(
        self,
        routes: Routes,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        max_headers: int = DEFAULT_MAX_HEADERS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER,
    ) -> None:
        self._routes = dict(routes)
        self._allowed: dict[str, list[str]] = {}
        for method, path in self._routes:
            self._allowed.setdefault(path, []).append(method)
        self._host = host
        self._requested_port = port
        self._max_body = max_body_bytes
        self._max_head = max_head_bytes
        self._idle_timeout = idle_timeout_s
        self._request_timeout = request_timeout_s
        self._max_headers = max_headers
        self._max_connections = max_connections
        self._max_per_peer = max_connections_per_peer
        self._grace = shutdown_grace_s
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: set[_Connection] = set()
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for), once started."""
        if self._port is None:
            raise RuntimeError("HttpServer is not started")
        return self._port

    @property
    def host(self) -> str:
        return self._host

    async def start(self) -> None:
        """Bind and listen; raises PortInUse when the port is taken."""
        if self._server is not None or self._closing:
            raise RuntimeError("HttpServer can be started once")
        try:
            self._server = await asyncio.start_server(
                self._serve_connection, self._host, self._requested_port, limit=_READ_CHUNK
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(self._host, self._requested_port) from exc
            raise
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        """Stop accepting, drop idle connections, give busy ones the grace period."""
        if self._server is None or self._closing:
            self._closing = True
            return
        self._closing = True
        self._server.close()
        for conn in list(self._connections):
            if conn.idle:
                conn.task.cancel()
        tasks = [conn.task for conn in self._connections]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is None:  # asyncio.start_server always runs this callback as a task
            raise RuntimeError("connection handler must run in a task")
        peername = writer.get_extra_info("peername")
        conn = _Connection(task, str(peername[0]) if peername else "")
        admitted = self._admit(conn)
        self._connections.add(conn)
        try:
            if admitted and not self._closing:
                await self._serve_requests(conn, reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stalled: nothing to answer
        except asyncio.CancelledError:
            # aclose() or a newer connection at the cap cancelled us. End quietly: asyncio's
            # own done-callback for this task (3.11) calls task.exception(), which raises on
            # a cancelled task.
            pass
        finally:
            self._connections.discard(conn)
            await _close_writer(writer)

    def _admit(self, new: _Connection) -> bool:
        """Room for `new` under both caps, closing the oldest idle connection where one is
        full; False (the new one is closed) when a full cap has no idle connection."""
        caps = [(list(self._connections), self._max_connections)]
        caps.append(([c for c in self._connections if c.peer == new.peer], self._max_per_peer))
        for holders, cap in caps:
            if len(holders) < cap:
                continue
            idle = [c for c in holders if c.idle and not c.task.done()]
            if not idle:
                logger.warning("connection refused: %d connections open", len(holders))
                return False
            oldest = min(idle, key=lambda c: c.idle_since)
            oldest.idle = False  # counted as gone: a second newcomer picks another
            self._connections.discard(oldest)
            oldest.task.cancel()
        return True

    async def _serve_requests(
        self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head)
        while True:
            try:
                request = await self._read_request(conn, parser, reader, writer)
            except _BadRequest as bad:
                error = json_response({"error": bad.reason}, bad.status)
                await self._send(writer, self._encoded(parser, error, keep_alive=False))
                return
            if request is None:
                return
            response = await self._respond(request, parser, reader)
            if response is None:
                return
            keep_alive = not self._closing
            await self._send(
                writer, self._encoded(parser, response, keep_alive, request.method == "HEAD")
            )
            if not keep_alive or parser.our_state is not h11.DONE:
                return
            try:
                parser.start_next_cycle()
            except h11.LocalProtocolError:
                return  # the client's side is not done (an unread body) or must close

    async def _send(self, writer: asyncio.StreamWriter, wire: bytes) -> None:
        """Write an answer within the request deadline: a client that stops reading would
        otherwise hold a busy connection, one `_admit` never evicts, for ever (the
        TimeoutError closes it)."""
        async with asyncio.timeout(self._request_timeout):
            writer.write(wire)
            await writer.drain()

    def _encoded(
        self, parser: h11.Connection, response: Response, keep_alive: bool, head: bool = False
    ) -> bytes:
        """The answer's bytes through h11 (which closes HTTP/1.0 and `Connection: close`
        exchanges); by hand when h11 is past answering (after the client's framing error)."""
        headers = [("content-length", str(len(response.body)))]
        headers += [(name, value) for name, value in response.headers.items()]
        if not keep_alive:
            headers.append(("connection", "close"))
        reason = _REASONS.get(response.status, "Unknown").encode("latin-1")
        try:
            wire = parser.send(h11.Response(status_code=response.status, headers=headers,
                                            reason=reason)) or b""
            if not head and response.body:
                wire += parser.send(h11.Data(data=response.body)) or b""
            return wire + (parser.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return _encode(response, keep_alive=False)

    async def _read_request(
        self,
        conn: _Connection,
        parser: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> Request | None:
        """The next request, or None when the client closed between requests (or mid-way)."""
        loop = asyncio.get_running_loop()
        conn.idle, conn.idle_since = True, loop.time()
        deadline = loop.time() + self._idle_timeout
        started: h11.Request | None = None
        body: list[bytes] = []
        size = 0
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as exc:
                if parser.their_state is h11.ERROR and reader.at_eof():
                    return None  # the client left mid-request: nobody to answer
                raise _BadRequest(exc.error_status_hint, str(exc) or "malformed request") from None
            if event is h11.NEED_DATA:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(_READ_CHUNK)
                if data and conn.idle:
                    conn.idle = False
                    deadline = loop.time() + self._request_timeout
                parser.receive_data(data)
            elif isinstance(event, h11.Request):
                conn.idle = False
                started = event
                self._check_head(event)
                if parser.they_are_waiting_for_100_continue:
                    writer.write(parser.send(h11.InformationalResponse(
                        status_code=100, headers=[], reason=b"Continue")) or b"")
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._max_body:
                    raise _BadRequest(413, f"body larger than {self._max_body} bytes")
                body.append(event.data)
            elif isinstance(event, h11.EndOfMessage) and started is not None:
                return _request_of(started, b"".join(body))
            else:  # ConnectionClosed between requests (PAUSED cannot come before the end)
                return None

    def _check_head(self, event: h11.Request) -> None:
        if event.http_version not in (b"1.0", b"1.1"):
            raise _BadRequest(505, f"unsupported version {event.http_version[:8]!r}")
        if len(event.headers) > self._max_headers:
            raise _BadRequest(431, f"more than {self._max_headers} header lines")
        # h11 caps only a head still arriving; one that came whole in a read is measured here.
        size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
        if size > self._max_head:
            raise _BadRequest(431, "request head too large")
        lengths = [value for name, value in event.headers if name == b"content-length"]
        if any(name == b"transfer-encoding" for name, _ in event.headers):
            raise _BadRequest(411, "send the body with Content-Length, not Transfer-Encoding")
        if lengths and int(lengths[0]) > self._max_body:
            raise _BadRequest(413, f"body larger than {self._max_body} bytes")

    async def _respond(
        self, request: Request, parser: h11.Connection, reader: asyncio.StreamReader
    ) -> Response | None:
        """Run the handler, cancelling it if the client disconnects; None drops the line."""
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            allowed = self._allowed.get(request.path)
            if allowed is None:
                return json_response({"error": "not found"}, 404)
            return json_response(
                {"error": "method not allowed"}, 405, {"allow": ", ".join(sorted(allowed))}
            )
        loop = asyncio.get_running_loop()
        handler_task = loop.create_task(handler(request))
        # Watch the socket while the handler runs: EOF or a reset means nobody waits for
        # the answer. Bytes of a pipelined next request are kept by h11 for the next cycle.
        watch = loop.create_task(reader.read(_READ_CHUNK))

        def on_read(done: asyncio.Task[bytes]) -> None:
            if done.cancelled():
                return
            data = None if done.exception() is not None else done.result()
            if data:
                parser.receive_data(data)
            else:
                handler_task.cancel()

        watch.add_done_callback(on_read)
        try:
            return await handler_task
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return None  # the client disconnected while the handler ran
        except Abort:
            return None
        except Exception:
            logger.exception("handler for %s %s failed", request.method, request.path)
            return json_response({"error": "internal server error"}, 500)
        finally:
            if not watch.done():
                watch.cancel()
                # The reader allows one waiter at a time: let the cancellation land first.
                await asyncio.wait((watch,))
