"""A minimal asyncio HTTP/1.1 server: the reference upstream and the processor's probes.

Why not a framework: the runtime dependencies are fixed (no aiohttp), and both users need
only exact-path routing, Content-Length bodies and keep-alive. What it does:

- persistent connections (HTTP/1.1 default, HTTP/1.0 with `Connection: keep-alive`),
  requests on one connection answered in order;
- bodies framed by Content-Length only: `Transfer-Encoding` gets 411 and the connection is
  closed, since the body cannot be skipped safely;
- limits on the request head (431) and the body (413), and an idle/read timeout;
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
    """The request cannot be framed: answer `status`, then close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True, eq=False)
class _Connection:
    task: asyncio.Task[None]
    idle: bool = True


def _encode(response: Response, keep_alive: bool) -> bytes:
    status = response.status
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
    head.append(f"content-length: {len(response.body)}\r\n")
    head.extend(f"{name}: {value}\r\n" for name, value in response.headers.items())
    if not keep_alive:
        head.append("connection: close\r\n")
    head.append("\r\n")
    return "".join(head).encode("latin-1") + response.body


def _parse_head(head: bytes) -> tuple[str, str, str, str, dict[str, str]]:
    """Request line and headers of one request head (without the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha():
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _BadRequest(505, f"unsupported version {version[:16]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    path, _, query = target.partition("?")
    return method, path, query, version, headers


def _wants_keep_alive(version: str, headers: Mapping[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.1":
        return "close" not in connection
    return "keep-alive" in connection


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
        conn = _Connection(task)
        self._connections.add(conn)
        try:
            if not self._closing:
                await self._serve_requests(conn, reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or stalled: nothing to answer
        except asyncio.CancelledError:
            # aclose() cancelled us. End quietly: asyncio's own done-callback for this
            # task (3.11) calls task.exception(), which raises on a cancelled task.
            pass
        finally:
            self._connections.discard(conn)
            await _close_writer(writer)

    async def _serve_requests(
        self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        buffer = bytearray()
        while True:
            conn.idle = True
            try:
                async with asyncio.timeout(self._idle_timeout):
                    request, keep_alive = await self._read_request(conn, reader, writer, buffer)
            except _BadRequest as bad:
                error = json_response({"error": bad.reason}, bad.status)
                writer.write(_encode(error, keep_alive=False))
                await writer.drain()
                return
            if request is None:
                return
            response = await self._respond(request, reader, buffer)
            if response is None:
                return
            keep_alive = keep_alive and not self._closing
            writer.write(_encode(response, keep_alive))
            await writer.drain()
            if not keep_alive:
                return

    async def _read_request(
        self,
        conn: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        buffer: bytearray,
    ) -> tuple[Request | None, bool]:
        """The next request, or None on a clean EOF between requests."""
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(buffer) > self._max_head:
                raise _BadRequest(431, "request head too large")
            chunk = await reader.read(_READ_CHUNK)
            if not chunk:
                if buffer:
                    raise asyncio.IncompleteReadError(bytes(buffer), None)
                return None, False
            conn.idle = False
            start = max(0, len(buffer) - 3)
            buffer += chunk
            end = buffer.find(b"\r\n\r\n", start)
        conn.idle = False
        if end > self._max_head:
            raise _BadRequest(431, "request head too large")
        method, path, query, version, headers = _parse_head(bytes(buffer[:end]))
        del buffer[: end + 4]
        if "transfer-encoding" in headers:
            raise _BadRequest(411, "send the body with Content-Length, not Transfer-Encoding")
        raw_length = headers.get("content-length", "0")
        if not (raw_length.isascii() and raw_length.isdigit()):
            raise _BadRequest(400, "invalid Content-Length")
        length = int(raw_length)
        if length > self._max_body:
            raise _BadRequest(413, f"body larger than {self._max_body} bytes")
        if len(buffer) < length and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits 1 s for it
        while len(buffer) < length:
            chunk = await reader.read(_READ_CHUNK)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buffer), length)
            buffer += chunk
        body = bytes(buffer[:length])
        del buffer[:length]
        request = Request(method, path, query, headers, body)
        return request, _wants_keep_alive(version, headers)

    async def _respond(
        self, request: Request, reader: asyncio.StreamReader, buffer: bytearray
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
        # the answer. Bytes of a pipelined next request are kept for the next read.
        watch = loop.create_task(reader.read(_READ_CHUNK))

        def on_read(done: asyncio.Task[bytes]) -> None:
            if done.cancelled():
                return
            data = None if done.exception() is not None else done.result()
            if data:
                buffer.extend(data)
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
