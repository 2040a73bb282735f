"""`stream upstream`: the reference parse API, with faults you can set, over real HTTP.

Tests and benchmarks need an upstream that misbehaves on demand and says afterwards what
it saw. `POST /v1/parse` answers the builtin parser's result for `{"id", "sender", "body"}`
unless the current behaviour says otherwise. A request meets the checks in this order:

1. black hole: it is accepted and never answered (the client's timeout ends it);
2. bearer token, when one is set: 401 without it;
3. rate limit: a token bucket (`rate` per second, `burst` deep) or, with `window` > 0, a
   fixed window of `rate * window` calls: 429 with `Retry-After` (to the window's end), or
   with `refuse_503` a bare 503 (nginx `limit_req`); with `quota_headers` every answer
   carries the window's quota (`x`: X-RateLimit-* with Reset in seconds, `x-unix`: Reset
   as a Unix time, `ietf`: RateLimit-Limit/Remaining/Reset, `structured`: RateLimit and
   RateLimit-Policy);
4. concurrency cap: 503 at once when `max_concurrency` requests are already in progress;
5. request body: 400 with a reason if it is not an SMS object;
6. latency (fixed or lognormal), then a share `error_rate` of requests answers 500;
7. otherwise 200 with `parse_sms(body, sender)`.

Behaviour changes at run time through `POST /control` or `ReferenceUpstream.set_behaviour`,
or by a schedule of phases that apply in order from start or reset (the last one holds).
`GET /stats` counts outcomes; `POST /stats/reset` zeroes them and restarts the schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hmac
import json
import math
import random
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Self

from stream.config import parse_duration
from stream.devkit.ratelimit import FixedWindow, TokenBucket, whole_seconds
from stream.errors import ConfigError
from stream.observability import logs
from stream.observability.httpserver import Abort, HttpServer, Request, Response, json_response
from stream.sms.parser import parse_sms

__all__ = [
    "PARSE_PATH",
    "Phase",
    "ReferenceUpstream",
    "UpstreamBehaviour",
    "main",
    "parse_schedule",
]

PARSE_PATH = "/v1/parse"
# Requests in progress get this long to finish when the upstream closes: it is a test
# double, so closing fast matters more than answering a slow request.
SHUTDOWN_GRACE_S = 1.0
# Per-second outcome counts kept for /stats: ten minutes covers any benchmark phase.
HISTORY_SECONDS = 600


class _Invalid(ValueError):
    """A behaviour, schedule or request the upstream cannot use; the message says why."""


def _same_kind(value: object, kind: type) -> bool:
    """Exact type match: True is not an integer setting, 1 is not a switch."""
    return type(value) is kind


UPSTREAM_MAX_CONNECTIONS = 10_000
"""STREAM_LIMIT_MAX's highest value: one connection per call stream run has in flight."""


@dataclass(frozen=True)
class UpstreamBehaviour:
    """How the upstream answers; times in seconds, 0 switches a limit off.

    Latency is lognormal with median `latency_median` and shape `latency_sigma` (capped at
    `latency_max`) when `latency_median` > 0, else the fixed `latency`. `burst` 0 means
    max(1, rate / 10). `retry_after_date` sends Retry-After as an HTTP-date, not seconds.
    """

    latency: float = 0.0
    latency_median: float = 0.0
    latency_sigma: float = 0.0
    latency_max: float = 20.0
    rate: float = 0.0
    burst: float = 0.0
    max_concurrency: int = 0
    error_rate: float = 0.0
    black_hole: bool = False
    retry_after_date: bool = False
    window: float = 0.0
    refuse_503: bool = False
    quota_headers: str = ""

    def __post_init__(self) -> None:
        if self.quota_headers not in QUOTA_FORMATS:
            raise _Invalid(
                f"quota_headers: one of {', '.join(map(repr, QUOTA_FORMATS))}, "
                f"got {self.quota_headers!r}"
            )
        for name, kind in _FIELD_KINDS.items():
            if kind is str:
                continue
            value: float = getattr(self, name)
            if kind is float and _same_kind(value, int):
                value = float(value)
                object.__setattr__(self, name, value)  # rate=200 means 200.0
            if not _same_kind(value, kind):
                raise _Invalid(f"{name}: expected {kind.__name__}, got {value!r}")
            if value < 0 or (kind is float and not math.isfinite(value)):
                raise _Invalid(f"{name}: must be a finite number >= 0, got {value!r}")
        if self.error_rate > 1:
            raise _Invalid(f"error_rate: must be within 0..1, got {self.error_rate!r}")

    def with_changes(self, changes: Mapping[str, object]) -> UpstreamBehaviour:
        """A copy with `changes` applied; values may be JSON values or strings like "200".

        Raises ValueError naming the field for an unknown field or a bad value.
        """
        coerced: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in _FIELD_KINDS:
                raise _Invalid(f"{name}: unknown behaviour field")
            coerced[name] = _coerce(name, value, _FIELD_KINDS[name])
        return dataclasses.replace(self, **coerced)

    def latency_s(self, rng: random.Random) -> float:
        if self.latency_median > 0:
            sampled = rng.lognormvariate(math.log(self.latency_median), self.latency_sigma)
            return min(sampled, self.latency_max)
        return self.latency

    def bucket_size(self) -> float:
        return self.burst if self.burst > 0 else max(1.0, self.rate / 10)

    def window_quota(self) -> int:
        return max(1, round(self.rate * self.window))


QUOTA_FORMATS = ("", "x", "x-unix", "ietf", "structured")
"""Values of `quota_headers`: none, or how the quota is told (see the module docstring)."""


_FIELD_KINDS: dict[str, type] = {
    f.name: type(f.default) for f in dataclasses.fields(UpstreamBehaviour)
}


def _coerce(name: str, value: object, kind: type) -> object:
    """A JSON value or a CLI/schedule string as `kind` (bool, int, float or str)."""
    if kind is str:
        if isinstance(value, str):
            return value
        raise _Invalid(f"{name}: expected a string, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise _Invalid(f"{name}: expected true or false, got {value!r}")
    if isinstance(value, bool):
        raise _Invalid(f"{name}: expected a number, got {value!r}")
    try:
        number = float(value) if isinstance(value, int | float | str) else math.nan
    except ValueError:
        number = math.nan
    if kind is int and number.is_integer():
        return int(number)
    if kind is float and math.isfinite(number):
        return number
    expected = "an integer" if kind is int else "a number"
    raise _Invalid(f"{name}: expected {expected}, got {value!r}")


@dataclass(frozen=True)
class Phase:
    """One step of a schedule: the behaviour fields it changes, held for `duration_s`."""

    duration_s: float
    changes: Mapping[str, object]

    def to_json(self) -> dict[str, object]:
        return {"duration": self.duration_s, **self.changes}


def parse_schedule(spec: str | Sequence[Mapping[str, object]]) -> tuple[Phase, ...]:
    """Phases from `"20s:rate=200,latency=0.1,20s:rate=100,0s:rate=200"` or a JSON list.

    In the string form a `<duration>:` prefix starts a phase and bare `field=value` items
    add to the current one. In the list form each object has `duration` (seconds or a
    string like "20s") and the fields it changes. Every field is checked against
    UpstreamBehaviour; raises ValueError naming what is wrong.
    """
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("["):
            loaded = json.loads(text)
            if not isinstance(loaded, list):
                raise _Invalid("schedule: a JSON schedule must be a list of phases")
            return parse_schedule(loaded)
        return _parse_schedule_text(text)
    phases = []
    for item in spec:
        if not isinstance(item, Mapping) or "duration" not in item:
            raise _Invalid(f"schedule: each phase needs a duration, got {item!r}")
        changes = {k: v for k, v in item.items() if k != "duration"}
        phases.append(Phase(_duration(item["duration"]), changes))
    return _checked(phases)


def _parse_schedule_text(text: str) -> tuple[Phase, ...]:
    phases: list[Phase] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        head, colon, rest = item.partition(":")
        if colon:
            phases.append(Phase(_duration(head), {}))
            item = rest
        if not phases:
            raise _Invalid(f"schedule: {item!r} comes before any '<duration>:' phase")
        name, equals, value = item.partition("=")
        if not equals:
            raise _Invalid(f"schedule: {item!r} is not field=value")
        phases[-1] = Phase(phases[-1].duration_s, {**phases[-1].changes, name.strip(): value})
    return _checked(phases)


def _duration(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration("schedule", value)
        except ConfigError as exc:
            raise _Invalid(str(exc)) from None
    raise _Invalid(f"schedule: {value!r} is not a duration")


def _checked(phases: list[Phase]) -> tuple[Phase, ...]:
    """The phases with their changes validated and typed (`"200"` becomes 200.0)."""
    typed = []
    for phase in phases:
        changed = UpstreamBehaviour().with_changes(phase.changes)
        typed.append(Phase(phase.duration_s, {k: getattr(changed, k) for k in phase.changes}))
    return tuple(typed)


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
    """`(body, sender)` of a parse request; _Invalid with the reason if it is not one."""
    try:
        obj = request.json()
    except ValueError:
        raise _Invalid("body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise _Invalid("body must be a JSON object")
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        raise _Invalid("id must be a non-empty string")
    body, sender = obj.get("body"), obj.get("sender", "")
    if not isinstance(body, str):
        raise _Invalid("body must be a string")
    if not isinstance(sender, str):
        raise _Invalid("sender must be a string")
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
            raise _Invalid("control body must be a JSON object")
        token = changes.pop("token", None)
        if token is not None and not isinstance(token, str):
            raise _Invalid("token: expected a string")
        if "schedule" not in changes:
            return self._base.with_changes(changes), None, token
        spec = changes.pop("schedule")
        return self._base.with_changes(changes), parse_schedule(spec or ()), token


def _behaviour_from_args(args: argparse.Namespace) -> UpstreamBehaviour:
    return UpstreamBehaviour(
        latency=args.latency,
        latency_median=args.latency_median,
        latency_sigma=args.latency_sigma,
        latency_max=args.latency_max,
        rate=args.rate,
        burst=args.burst,
        max_concurrency=args.max_concurrency,
        error_rate=args.error_rate,
        black_hole=args.black_hole,
        retry_after_date=args.retry_after_date,
        window=args.window,
        refuse_503=args.refuse_503,
        quota_headers=args.quota_headers,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream upstream",
        description="Run the reference parse API (POST /v1/parse) with settable faults. "
        "GET /stats, POST /stats/reset and POST /control (JSON behaviour) steer it at run "
        "time. Times are in seconds; 0 switches a limit off.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--port", type=int, default=8080, help="port to bind, 0 = any free (default 8080)")
    add("--token", default="", help="require 'Authorization: Bearer <token>' on /v1/parse")
    add("--latency", type=float, default=0.0, help="fixed latency per request")
    add("--latency-median", type=float, default=0.0, help="lognormal latency median (> 0 on)")
    add("--latency-sigma", type=float, default=0.0, help="lognormal latency shape")
    add("--latency-max", type=float, default=20.0, help="cap on the lognormal latency")
    add("--rate", type=float, default=0.0, help="token-bucket rate, requests/s (429 beyond)")
    add("--burst", type=float, default=0.0, help="token-bucket size (default max(1, rate/10))")
    add("--max-concurrency", type=int, default=0, help="requests in progress (503 beyond)")
    add("--error-rate", type=float, default=0.0, help="share of requests answered 500")
    add("--black-hole", action="store_true", help="accept requests and never answer")
    add("--retry-after-date", action="store_true", help="send Retry-After as an HTTP-date")
    add("--window", type=float, default=0.0, help="fixed window of rate*window calls (> 0 on)")
    add("--refuse-503", action="store_true", help="refuse over the rate with a bare 503")
    add("--quota-headers", default="", choices=QUOTA_FORMATS, help="tell the window's quota")
    add("--schedule", default="", help='phases, e.g. "20s:rate=200,20s:rate=100,0s:rate=200"')
    add("--seed", type=int, default=None, help="seed for latency and error draws")
    add("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


async def _serve(upstream: ReferenceUpstream) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with upstream:
        print(f"reference upstream listening on {upstream.url}", flush=True)
        await stop.wait()


def main(argv: list[str]) -> int:
    """Serve until SIGINT or SIGTERM; exit 2 on a bad flag."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        behaviour = _behaviour_from_args(args)
        schedule = parse_schedule(args.schedule) if args.schedule else ()
    except ValueError as exc:
        parser.error(str(exc))
    logs.configure(args.log_level)
    upstream = ReferenceUpstream(
        behaviour,
        schedule=schedule,
        host=args.host,
        port=args.port,
        token=args.token,
        seed=args.seed,
    )
    asyncio.run(_serve(upstream))
    return 0
