"""The minimal HTTP server, over real loopback sockets (raw streams where framing matters)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from stream.observability.httpserver import (
    Abort,
    HttpServer,
    Request,
    Response,
    Routes,
    json_response,
    text_response,
)

MAX_BODY = 1024
WAIT_S = 5.0  # bound on waiting for a condition; never a fixed sleep


class Handlers:
    """Routes with hooks to observe a slow handler from the test."""

    def __init__(self) -> None:
        self.slow_started = asyncio.Event()
        self.slow_cancelled = asyncio.Event()
        self.release_slow = asyncio.Event()

    async def hello(self, _: Request) -> Response:
        return text_response("hello")

    async def echo(self, request: Request) -> Response:
        return json_response(
            {"body": request.body.decode(), "query": request.query, "x": request.headers.get("x")}
        )

    async def slow(self, _: Request) -> Response:
        self.slow_started.set()
        try:
            await self.release_slow.wait()
        except asyncio.CancelledError:
            self.slow_cancelled.set()
            raise
        return text_response("slow")

    async def boom(self, _: Request) -> Response:
        raise RuntimeError("handler bug")

    async def abort(self, _: Request) -> Response:
        raise Abort

    def routes(self) -> Routes:
        return {
            ("GET", "/hello"): self.hello,
            ("POST", "/echo"): self.echo,
            ("PUT", "/echo"): self.echo,
            ("GET", "/slow"): self.slow,
            ("GET", "/boom"): self.boom,
            ("GET", "/abort"): self.abort,
        }


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
async def server(handlers: Handlers) -> AsyncIterator[HttpServer]:
    async with HttpServer(handlers.routes(), max_body_bytes=MAX_BODY) as srv:
        yield srv


@pytest.fixture
async def client(server: HttpServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", trust_env=False) as c:
        yield c


async def _open(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


async def test_routes_by_method_and_path(client: httpx.AsyncClient) -> None:
    hello = await client.get("/hello")
    assert (hello.status_code, hello.text) == (200, "hello")
    assert hello.headers["content-type"].startswith("text/plain")
    echo = await client.post("/echo?a=1", content=b"ping", headers={"X": "y"})
    assert echo.status_code == 200
    assert echo.headers["content-type"] == "application/json"
    assert echo.json() == {"body": "ping", "query": "a=1", "x": "y"}


async def test_unknown_path_is_404_and_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nowhere")
    assert missing.status_code == 404
    wrong = await client.get("/echo")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST, PUT"


async def test_many_requests_share_one_keep_alive_connection(server: HttpServer) -> None:
    reader, writer = await _open(server)
    try:
        for n in range(200):
            body = str(n).encode()
            writer.write(
                b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            status, headers, payload = await _read_response(reader)
            assert status == 200
            assert "connection" not in headers
            assert orjson.loads(payload)["body"] == str(n)
    finally:
        await _close(writer)


async def test_pipelined_requests_are_answered_in_order(server: HttpServer) -> None:
    reader, writer = await _open(server)
    try:
        writer.write(
            b"".join(
                b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\n\r\n%d" % n
                for n in range(10)
            )
        )
        bodies = [orjson.loads((await _read_response(reader))[2])["body"] for _ in range(10)]
        assert bodies == [str(n) for n in range(10)]
    finally:
        await _close(writer)


async def test_connection_close_and_http10_end_the_connection(server: HttpServer) -> None:
    for request in (
        b"GET /hello HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        b"GET /hello HTTP/1.0\r\n\r\n",
    ):
        reader, writer = await _open(server)
        try:
            writer.write(request)
            status, headers, _ = await _read_response(reader)
            assert status == 200
            assert headers["connection"] == "close"
            assert await reader.read() == b""
        finally:
            await _close(writer)


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/echo", content=b"x" * (MAX_BODY + 1))
    assert response.status_code == 413
    ok = await client.post("/echo", content=b"x" * MAX_BODY)
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            411,
        ),
        (b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: nope\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\n\r\n", 400),
        (b"garbage\r\n\r\n", 400),
        (b"GET /hello HTTP/2.0\r\n\r\n", 505),
        (b"GET /hello HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    ],
    ids=["chunked", "bad-length", "two-lengths", "no-host", "garbage", "version", "huge-head"],
)
async def test_unframeable_requests_are_rejected_and_closed(
    server: HttpServer, request_bytes: bytes, status: int
) -> None:
    reader, writer = await _open(server)
    try:
        writer.write(request_bytes)
        got, headers, _ = await _read_response(reader)
        assert got == status
        assert headers["connection"] == "close"
        assert await reader.read() == b""
    finally:
        await _close(writer)


async def test_handler_bug_is_500_and_the_server_carries_on(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.get("/boom")
    assert response.status_code == 500
    assert "handler bug" in caplog.text
    assert (await client.get("/hello")).status_code == 200


async def test_abort_drops_the_connection_without_an_answer(
    client: httpx.AsyncClient,
) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get("/abort")
    assert (await client.get("/hello")).status_code == 200


@pytest.mark.parametrize(
    "partial",
    [
        b"GET /hel",
        b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nonly-part-of-it",
    ],
    ids=["mid-head", "mid-body"],
)
async def test_client_leaving_mid_request_does_not_break_the_server(
    server: HttpServer, client: httpx.AsyncClient, partial: bytes
) -> None:
    _, writer = await _open(server)
    writer.write(partial)
    await writer.drain()
    await _close(writer)
    assert (await client.get("/hello")).status_code == 200


async def test_client_leaving_while_the_handler_runs_cancels_it(
    server: HttpServer, client: httpx.AsyncClient, handlers: Handlers
) -> None:
    _, writer = await _open(server)
    writer.write(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n")
    async with asyncio.timeout(WAIT_S):
        await handlers.slow_started.wait()
    await _close(writer)
    async with asyncio.timeout(WAIT_S):
        await handlers.slow_cancelled.wait()
    assert (await client.get("/hello")).status_code == 200


async def test_close_lets_a_request_in_progress_finish(handlers: Handlers) -> None:
    server = HttpServer(handlers.routes())
    await server.start()
    async with httpx.AsyncClient(trust_env=False) as c:
        pending = asyncio.create_task(c.get(f"http://127.0.0.1:{server.port}/slow"))
        async with asyncio.timeout(WAIT_S):
            await handlers.slow_started.wait()
        closing = asyncio.create_task(server.aclose())
        handlers.release_slow.set()
        response = await pending
        await closing
    assert (response.status_code, response.text) == (200, "slow")
    assert response.headers["connection"] == "close"
    assert not handlers.slow_cancelled.is_set()


async def test_close_cancels_what_outlives_the_grace_period(handlers: Handlers) -> None:
    server = HttpServer(handlers.routes(), shutdown_grace_s=0.05)
    await server.start()
    port = server.port
    reader, writer = await _open(server)
    idle_reader, idle_writer = await _open(server)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n")
        async with asyncio.timeout(WAIT_S):
            await handlers.slow_started.wait()
            await server.aclose()
        assert handlers.slow_cancelled.is_set()
        assert await reader.read() == b""
        assert await idle_reader.read() == b""
    finally:
        await _close(writer)
        await _close(idle_writer)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_port_zero_picks_a_free_port_and_servers_coexist() -> None:
    async def ok(_: Request) -> Response:
        return Response(204)

    async with (
        HttpServer({("GET", "/"): ok}) as first,
        HttpServer({("GET", "/"): ok}) as second,
    ):
        assert first.port != second.port
        assert first.port > 0
        async with httpx.AsyncClient(trust_env=False) as c:
            response = await c.get(f"http://127.0.0.1:{second.port}/")
        assert response.status_code == 204


async def test_idle_connection_is_closed_after_the_idle_timeout(handlers: Handlers) -> None:
    async with HttpServer(handlers.routes(), idle_timeout_s=0.05) as server:
        reader, writer = await _open(server)
        try:
            writer.write(b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n")
            assert (await _read_response(reader))[0] == 200
            async with asyncio.timeout(WAIT_S):
                assert await reader.read() == b""
        finally:
            await _close(writer)


async def test_expect_100_continue_is_answered_before_the_body(server: HttpServer) -> None:
    reader, writer = await _open(server)
    try:
        writer.write(
            b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
        )
        async with asyncio.timeout(WAIT_S):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hi")
        status, _, body = await _read_response(reader)
        assert (status, orjson.loads(body)["body"]) == (200, "hi")
    finally:
        await _close(writer)
