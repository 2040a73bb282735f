"""The reference upstream's HTTP server: `POST /v1/parse` under the current behaviour,
`/control` and `/stats` (the package docstring has the order of the checks)."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import math
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Self

from stream.devkit.ratelimit import FixedWindow, TokenBucket, whole_seconds
from stream.devkit.upstream.behaviour import Invalid, Phase, UpstreamBehaviour, parse_schedule
from stream.observability.httpserver import Abort, HttpServer, Request, Response, json_response
from stream.sms.parser import parse_sms

__all__ = ["PARSE_PATH", "ReferenceUpstream"]

PARSE_PATH = "/v1/parse"
# Requests in progress get this long to finish when the upstream closes: it is a test
# double, so closing fast matters more than answering a slow request.
SHUTDOWN_GRACE_S = 1.0
# Per-second outcome counts kept for /stats: ten minutes covers any benchmark phase.
HISTORY_SECONDS = 600

UPSTREAM_MAX_CONNECTIONS = 10_000
"""STREAM_LIMIT_MAX's highest value: one connection per call stream run has in flight."""


def _quota_headers(
    form: str, quota: int, window: float, left_s: float, remaining: int
) -> dict[str, str]:
    """The quota as `form` tells it; Reset rounded up to whole seconds, as APIs send it."""
    reset = whole_seconds(left_s)
    if form == "structured":
        return {
            "ratelimit": f'"window";r={remaining};t={reset}',
            "ratelimit-policy": f'"window";q={quota};w={math.ceil(window)}',
        }
    if form == "ietf":
        return {
            "ratelimit-limit": f"{quota}, {quota};w={math.ceil(window)}",
            "ratelimit-remaining": str(remaining),
            "ratelimit-reset": str(reset),
        }
    reset_value = math.ceil(time.time() + left_s) if form == "x-unix" else reset
    return {
        "x-ratelimit-limit": str(quota),
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": str(reset_value),
    }


def _retry_after(wait_s: float, as_date: bool) -> str:
    """Whole seconds, at least 1 (or that instant as an HTTP-date, rounded up)."""
    seconds = whole_seconds(wait_s)
    if not as_date:
        return str(seconds)
    instant = datetime.fromtimestamp(math.ceil(time.time() + seconds), UTC)
    return format_datetime(instant, usegmt=True)


def _sms_fields(request: Request) -> tuple[str, str]:
    """`(body, sender)` of a parse request; Invalid with the reason if it is not one."""
    try:
        obj = request.json()
    except ValueError:
        raise Invalid("body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise Invalid("body must be a JSON object")
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        raise Invalid("id must be a non-empty string")
    body, sender = obj.get("body"), obj.get("sender", "")
    if not isinstance(body, str):
        raise Invalid("body must be a string")
    if not isinstance(sender, str):
        raise Invalid("sender must be a string")
    return body, sender


_OUTCOMES = ("ok", "429", "503", "500", "400", "401", "black_holed", "cancelled")
_STATS_NAMES = {
    "ok": "accepted",
    "429": "rejected_429",
    "503": "rejected_503",
    "500": "errors_500",
    "400": "bad_request_400",
    "401": "unauthorized_401",
    "black_holed": "black_holed",
    "cancelled": "cancelled",
}


class ReferenceUpstream:
    """`async with ReferenceUpstream(behaviour, port=0) as up:` serves `up.url` meanwhile.

    `schedule` phases start at once and apply on top of `behaviour`. `token` enables the
    bearer check on the parse endpoint (control and stats stay open: they are for the
    harness). `seed` makes latency and error draws reproducible.
    """

    def __init__(
        self,
        behaviour: UpstreamBehaviour | None = None,
        *,
        schedule: Sequence[Phase] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "",
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = behaviour or UpstreamBehaviour()
        self._clock = clock
        self._expected_auth = f"Bearer {token}".encode() if token else None
        self._rng = random.Random(seed)  # noqa: S311 - fault injection, not cryptography
        self._release = asyncio.Event()
        self._server = HttpServer(
            {
                ("POST", PARSE_PATH): self._parse,
                ("GET", "/stats"): self._get_stats,
                ("POST", "/stats/reset"): self._reset_stats,
                ("GET", "/control"): self._get_control,
                ("POST", "/control"): self._post_control,
            },
            host,
            port,
            shutdown_grace_s=SHUTDOWN_GRACE_S,
            # One client (stream run, STREAM_LIMIT_MAX up to 10,000) holds a connection per
            # call in flight: the metrics port's caps would refuse a legitimate load here.
            max_connections=UPSTREAM_MAX_CONNECTIONS,
            max_connections_per_peer=UPSTREAM_MAX_CONNECTIONS,
        )
        self._concurrency = 0
        self._set_schedule(schedule)
        self.reset()

    @property
    def base_url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}"

    @property
    def url(self) -> str:
        """The parse endpoint, as STREAM_API_URL wants it."""
        return self.base_url + PARSE_PATH

    @property
    def behaviour(self) -> UpstreamBehaviour:
        """The behaviour in force now: the base with the schedule's phases so far applied."""
        if not self._phases:
            return self._base
        elapsed = self._clock() - self._schedule_start
        current = self._base
        for start, changes in self._phases:
            if start > elapsed:
                break
            current = changes
        return current

    def set_token(self, token: str) -> None:
        """Require a new bearer token ("" for none): a rotated secret, for halting tests."""
        self._expected_auth = f"Bearer {token}".encode() if token else None

    def set_behaviour(
        self, behaviour: UpstreamBehaviour, schedule: Sequence[Phase] | None = None
    ) -> None:
        """Replace the base behaviour; a given `schedule` replaces the old one and starts now."""
        self._base = behaviour
        self._set_schedule(self._schedule if schedule is None else schedule)

    def reset(self) -> None:
        """Zero the counters and restart the schedule (and the token bucket)."""
        now = self._clock()
        self._started = now
        self._schedule_start = now
        self._bucket = TokenBucket(now)
        self._window = FixedWindow(now)
        self._counts = dict.fromkeys(_OUTCOMES, 0)
        self._requests = 0
        self._concurrency_high_water = self._concurrency  # requests in progress stay counted
        self._history: dict[int, dict[str, int]] = {}

    def stats(self) -> dict[str, Any]:
        """Counts since start or reset, the behaviour in force and per-second history."""
        behaviour = self.behaviour
        return {
            "requests": self._requests,
            **{_STATS_NAMES[key]: count for key, count in self._counts.items()},
            "concurrency": self._concurrency,
            "concurrency_high_water": self._concurrency_high_water,
            "elapsed_s": round(self._clock() - self._started, 3),
            "behaviour": dataclasses.asdict(behaviour),
            "history": [{"t": t, **counts} for t, counts in sorted(self._history.items())],
        }

    async def start(self) -> None:
        await self._server.start()

    async def aclose(self) -> None:
        """Let black-holed requests drop their connections, then close the server."""
        self._release.set()
        await self._server.aclose()

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

    def _set_schedule(self, schedule: Sequence[Phase]) -> None:
        """Precompute each phase's start and cumulative behaviour; restart its clock."""
        self._schedule = tuple(schedule)
        self._phases: list[tuple[float, UpstreamBehaviour]] = []
        start, current = 0.0, self._base
        for phase in self._schedule:
            current = current.with_changes(phase.changes)
            self._phases.append((start, current))
            start += phase.duration_s
        self._schedule_start = self._clock()

    def _count(self, outcome: str) -> None:
        self._counts[outcome] += 1
        second = int(self._clock() - self._started)
        per_second = self._history.get(second)
        if per_second is None:
            for old in [t for t in self._history if t <= second - HISTORY_SECONDS]:
                del self._history[old]
            per_second = self._history[second] = {}
        per_second[outcome] = per_second.get(outcome, 0) + 1

    async def _parse(self, request: Request) -> Response:
        self._requests += 1
        behaviour = self.behaviour
        if behaviour.black_hole:
            self._count("black_holed")
            await self._release.wait()
            raise Abort
        if self._expected_auth is not None and not hmac.compare_digest(
            request.headers.get("authorization", "").encode(), self._expected_auth
        ):
            self._count("401")
            return json_response({"error": "unauthorized"}, 401, {"www-authenticate": "Bearer"})
        headers: dict[str, str] = {}
        if behaviour.window > 0 and behaviour.rate > 0:
            quota = behaviour.window_quota()
            accepted, left_s, remaining = self._window.take(quota, behaviour.window, self._clock())
            wait_s = 0.0 if accepted else left_s
            if behaviour.quota_headers:
                headers = _quota_headers(
                    behaviour.quota_headers, quota, behaviour.window, left_s, remaining
                )
        else:
            wait_s = self._bucket.take(behaviour.rate, behaviour.bucket_size(), self._clock())
        if wait_s > 0:
            if behaviour.refuse_503:
                self._count("503")
                return json_response({"error": "rate limited"}, 503, headers)
            self._count("429")
            headers["retry-after"] = _retry_after(wait_s, behaviour.retry_after_date)
            return json_response({"error": "rate limited"}, 429, headers)
        if behaviour.max_concurrency and self._concurrency >= behaviour.max_concurrency:
            self._count("503")
            return json_response({"error": "over capacity"}, 503)
        self._concurrency += 1
        self._concurrency_high_water = max(self._concurrency_high_water, self._concurrency)
        try:
            return await self._answer(request, behaviour, headers)
        except asyncio.CancelledError:
            self._count("cancelled")
            raise
        finally:
            self._concurrency -= 1

    async def _answer(
        self, request: Request, behaviour: UpstreamBehaviour, headers: dict[str, str]
    ) -> Response:
        try:
            body, sender = _sms_fields(request)
        except ValueError as exc:
            self._count("400")
            return json_response({"error": "invalid_request", "reason": str(exc)}, 400, headers)
        delay = behaviour.latency_s(self._rng)
        if delay > 0:
            await asyncio.sleep(delay)
        if behaviour.error_rate > 0 and self._rng.random() < behaviour.error_rate:
            self._count("500")
            return json_response({"error": "injected failure"}, 500, headers)
        self._count("ok")
        return json_response(parse_sms(body, sender), 200, headers)

    async def _get_stats(self, _: Request) -> Response:
        return json_response(self.stats())

    async def _reset_stats(self, _: Request) -> Response:
        self.reset()
        return json_response(self.stats())

    def _control_view(self) -> dict[str, Any]:
        return {
            "behaviour": dataclasses.asdict(self.behaviour),
            "base": dataclasses.asdict(self._base),
            "schedule": [phase.to_json() for phase in self._schedule],
        }

    async def _get_control(self, _: Request) -> Response:
        return json_response(self._control_view())

    async def _post_control(self, request: Request) -> Response:
        """Body: behaviour fields to change, optionally `"schedule"` (list, string or null)
        and `"token"` (the bearer token now required, "" for none)."""
        try:
            base, schedule, token = self._parse_control(request)
        except ValueError as exc:
            return json_response({"error": "invalid_control", "reason": str(exc)}, 400)
        self.set_behaviour(base, schedule)
        if token is not None:
            self.set_token(token)
        return json_response(self._control_view())

    def _parse_control(
        self, request: Request
    ) -> tuple[UpstreamBehaviour, tuple[Phase, ...] | None, str | None]:
        changes = request.json()
        if not isinstance(changes, dict):
            raise Invalid("control body must be a JSON object")
        token = changes.pop("token", None)
        if token is not None and not isinstance(token, str):
            raise Invalid("token: expected a string")
        if "schedule" not in changes:
            return self._base.with_changes(changes), None, token
        spec = changes.pop("schedule")
        return self._base.with_changes(changes), parse_schedule(spec or ()), token

