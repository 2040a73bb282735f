"""`stream console`: the group's state as one web page, on a port of its own.

Read-only by construction: the server knows three GET routes (the page, the state it
refreshes from, the DLQ read on demand), its Kafka clients only read (no consumer group,
nothing committed), and every SMS field it shows is masked as `stream dlq list` masks it.
Nothing a visitor sends reaches Kafka except a bounded, cached DLQ read. It binds to
127.0.0.1 unless told otherwise.

One self-contained page (`console.html`: inline CSS and JS, no build step, no external
requests, a Content-Security-Policy that allows only its own script): the state of the
moment is embedded in it, so the first paint needs no second request; then it polls
`api/state` every `REFRESH_S`. The server samples the group every `REFRESH_S` and keeps
`HISTORY_S` of throughput and lag for the charts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import signal
import sys
import time
from collections import deque
from importlib.resources import files
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from stream.config import Settings
from stream.errors import StreamError
from stream.observability.httpserver import HttpServer, Request, Response, Routes, json_response
from stream.tools.common import EXIT_OK, run_tool
from stream.tools.status import GroupReader, dlq_reasons

__all__ = ["DEFAULT_PORT", "Console", "main"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9300
REFRESH_S = 2.0
HISTORY_S = 600.0
DLQ_SHOWN = 200
"""Records the DLQ browser shows (the counts by reason cover the whole topic)."""
DLQ_CACHE_S = 10.0
"""Visitors share one DLQ read per 10 s: reloading the page cannot hammer the cluster."""


def _page_template() -> tuple[str, str]:
    """The page with its refresh period filled in, and the CSP hash of its script."""
    page = (files("stream.tools") / "console.html").read_text(encoding="utf-8")
    page = page.replace("__REFRESH_MS__", str(int(REFRESH_S * 1000)))
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts
    )
    return page, hashes


def _headers(script_hashes: str) -> dict[str, str]:
    return {
        "content-security-policy": (
            f"default-src 'none'; script-src {script_hashes}; style-src 'unsafe-inline'; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
    }


def _embedded(state: object) -> str:
    """JSON safe inside a <script> element: no `<` can close it."""
    return orjson.dumps(state).decode().replace("<", "\\u003c")


class Console:
    """Samples the group, keeps the history, answers the page's requests."""

    def __init__(self, settings: Settings, reader: GroupReader) -> None:
        self._settings = settings
        self._reader = reader
        self._view: dict[str, Any] | None = None
        self._error: str | None = None
        self._history: deque[dict[str, float]] = deque()
        self._dlq: tuple[float, dict[str, Any]] | None = None
        self._dlq_lock = asyncio.Lock()
        self._page, hashes = _page_template()
        self._headers = _headers(hashes)

    async def sample(self) -> None:
        """Read the group once; on failure keep the last view and say why."""
        try:
            view = await self._reader.read()
        except (KafkaError, StreamError, OSError) as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            return
        self._view, self._error = view, None
        self._history.append({
            "at": view["at"],
            "in_per_s": view["throughput"]["in_per_s"],
            "stored_per_s": view["throughput"]["stored_per_s"],
            "lag_main": view["lag"]["main"],
            "lag_retry": view["lag"]["retry"],
        })
        while self._history and self._history[0]["at"] < view["at"] - HISTORY_S:
            self._history.popleft()

    async def run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(REFRESH_S)

    def state(self) -> dict[str, Any]:
        return {"view": self._view, "error": self._error, "history": list(self._history)}

    async def _page_route(self, _: Request) -> Response:
        body = self._page.replace("__INITIAL_STATE__", _embedded(self.state()))
        headers = {"content-type": "text/html; charset=utf-8", **self._headers}
        return Response(200, headers, body.encode())

    async def _state_route(self, _: Request) -> Response:
        return json_response(self.state(), headers=self._headers)

    async def _dlq_route(self, _: Request) -> Response:
        async with self._dlq_lock:
            if self._dlq is None or time.monotonic() - self._dlq[0] > DLQ_CACHE_S:
                try:
                    scan = await dlq_reasons(self._settings, limit=DLQ_SHOWN)
                except (KafkaError, StreamError, OSError) as exc:
                    return json_response({"error": str(exc)}, 503, self._headers)
                self._dlq = (time.monotonic(), scan)
        return json_response(self._dlq[1], headers=self._headers)

    def routes(self) -> Routes:
        return {
            ("GET", "/"): self._page_route,
            ("GET", "/api/state"): self._state_route,
            ("GET", "/api/dlq"): self._dlq_route,
        }


async def serve_console(settings: Settings, bind: str, port: int,
                        started: asyncio.Event | None = None,
                        stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or forever); `started` is set once it answers."""
    stop = stop or asyncio.Event()
    async with GroupReader(settings) as reader:
        console = Console(settings, reader)
        await console.sample()
        async with HttpServer(console.routes(), bind, port) as server:
            print(f"stream console: http://{bind}:{server.port}/ (Ctrl-C stops)", flush=True)
            sampler = asyncio.create_task(console.run())
            if started is not None:
                started.set()
            try:
                await stop.wait()
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler


async def _console(settings: Settings, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await serve_console(settings, args.bind, args.port, stop=stop)
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream console",
        description="A read-only web page of the consumer group (members, lag, halts, the "
        "limiter, the DLQ), from Kafka alone; Kafka settings come from STREAM_* variables.",
    )
    parser.add_argument("--bind", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"stream console: --port {args.port} is outside 0..65535", file=sys.stderr)
        return 2
    return run_tool("stream console", lambda settings: _console(settings, args))
