"""The HTTP processor: each SMS POSTed to the parse API under the adaptive limiter.

`process_many` returns one outcome per SMS, in batch order: the result dict, or the
`TransientError` / `PermanentError` / `SystemicError` that SMS met. Those are returned,
never raised, so one bad SMS cannot fail its batch; anything raised is a bug and should
crash the consumer.

How the HTTP processor classifies an API call (and what it tells the limiter):

    2xx, valid result         -> result                          success(latency, quota)
    2xx, not JSON / invalid   -> PermanentError invalid_result    success(latency, quota)
    2xx, body not decodable   -> TransientError bad_encoding     ignore()
    429, 503                  -> TransientError http_<status>    dropped(Retry-After, status)
    408, 502, 504             -> TransientError http_<status>    dropped(Retry-After)
    500, 501, other 5xx       -> TransientError http_<status>    ignore()
    timeout                   -> TransientError timeout          dropped()
    connection / transport    -> TransientError connect|transport dropped()
    malformed / over a limit  -> TransientError api_protocol     ignore()
    401, 403                  -> SystemicError http_<status>     ignore()   (STREAM_API_TOKEN)
    404, 405                  -> SystemicError http_<status>     ignore()   (STREAM_API_URL)
    301, 302, 307, 308        -> SystemicError http_<status>     ignore()   (STREAM_API_URL)
    TLS, DNS, unencodable host-> SystemicError tls|dns|url       ignore()   (STREAM_API_URL)
    other 4xx (and 1xx/3xx)   -> PermanentError http_<status>    ignore()

A 429 and a 503 go to the limiter with their status (a rate refusal or a capacity drop, it
decides) and, like every answer, with the quota the rate-limit headers announce
(`parse_quota`). Transient outcomes are retried in-process, through the limiter (which
holds back calls while a Retry-After pause lasts), up to MAX_ATTEMPTS within
RETRY_BUDGET_S; after that the TransientError goes back to the caller, which routes the SMS
to a retry topic. A SystemicError is never retried here: every SMS would meet it, so the
engine halts and calls `probe` now and then until it clears.

Each call carries an `Idempotency-Key` (IETF httpapi draft): the SMS id and the attempt
number, so a replay of the same attempt (the client's keep-alive race) carries the same key,
and a retry a new one (a server caching an error answer per key would make it futile).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import orjson

from stream.clock import Clock, SystemClock
from stream.config import Settings
from stream.errors import PermanentError, SystemicError, TransientError
from stream.observability.metrics import API_LATENCY, API_RESPONSES, PROCESSING_DURATION
from stream.processors.apiclient import (
    ApiClient,
    BadEncoding,
    ConnectFailed,
    HttpClientError,
    InvalidUrl,
    ProtocolFault,
    Reply,
    Timeout,
)
from stream.processors.httpclient import HttpClient
from stream.processors.httpxclient import HttpxClient
from stream.processors.lifecycle import Lifecycle
from stream.processors.limiter import AdaptiveLimiter, Permit, parse_quota
from stream.sms.models import Outcome, Sms
from stream.sms.result import validate_result

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_RETRY_AFTER_S",
    "RETRY_BUDGET_S",
    "HttpProcessor",
    "idempotency_key",
    "parse_quota",
    "parse_retry_after",
]

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""API calls per SMS per batch: rides out a blip without holding the batch for long."""
RETRY_BUDGET_S = 30.0
"""No retry starts (or waits for a Retry-After) past this much time since the first call;
beyond it the retry topics, with their longer delays, are the better place to wait."""
MAX_RETRY_AFTER_S = 300.0
"""A longer Retry-After is taken as this: one bad header must not stall the limiter for
hours (the retry topics' delays take over)."""
CAPACITY_STATUSES = frozenset({408, 429, 502, 503, 504})
"""Statuses that say "too much load": the limiter backs off. A 500 or 501 is about the one
request; a trickle of them must not drag a loss-driven limit down (still retried, though)."""
REFUSAL_STATUSES = frozenset({429, 503})
"""Statuses a rate limiter answers with (nginx limit_req: 503): passed to the limiter."""
SYSTEMIC_STATUSES = {
    401: "STREAM_API_TOKEN",
    403: "STREAM_API_TOKEN",
    404: "STREAM_API_URL",
    405: "STREAM_API_URL",
    301: "STREAM_API_URL",
    302: "STREAM_API_URL",
    307: "STREAM_API_URL",
    308: "STREAM_API_URL",
}
"""Answers that every SMS would get until an operator fixes the named setting (a redirect:
the API moved, and we follow none: the URL must name where it is now)."""
PROBE_SMS = {
    "id": "stream-probe",
    "sender": "stream",
    "body": "probe",
    "received_at": "2000-01-01T00:00:00+00:00",
}
"""The fixed SMS `probe` sends: cheap to parse, and recognisable in the upstream's logs."""
CONNECT_TIMEOUT_S = 5.0
"""Connecting is quick or broken; failing fast lets the limiter see the outage."""


def idempotency_key(sms_id: str, attempt: int) -> str:
    """The `Idempotency-Key` of one attempt for one SMS: a structured-field String, the id
    itself when it is plain printable ASCII, else a digest of it (a header carries no more)."""
    plain = sms_id.isascii() and sms_id.isprintable() and '"' not in sms_id and "\\" not in sms_id
    name = sms_id if plain else "sha256-" + hashlib.sha256(sms_id.encode()).hexdigest()[:32]
    return f'"{name}/{attempt}"'


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date.

    None when absent or unreadable; clamped to 0..MAX_RETRY_AFTER_S. `now` (aware) is for
    tests; an HTTP-date is compared with the wall clock by default.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # "-0000" means UTC without a named zone
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _systemic_cause(exc: BaseException) -> str | None:
    """ "tls" or "dns" when a connection failed for a reason every call would meet."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return "tls"
        if isinstance(current, socket.gaierror):
            return "dns"
        current = current.__cause__ or current.__context__
    return None


class HttpProcessor(Lifecycle):
    """POSTs each SMS to the parse API, concurrently, under an AdaptiveLimiter it owns.

    The limiter bounds the calls in flight, and so the client's connections. The API token
    travels only in the client's prebuilt request head; it is never logged, and error
    messages name neither it nor the URL.
    """

    name = "http"

    def __init__(
        self,
        settings: Settings,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        retry_budget_s: float = RETRY_BUDGET_S,
        clock: Clock | None = None,
    ) -> None:
        clock = clock or SystemClock()
        self._limiter = AdaptiveLimiter(
            min_limit=settings.limit_min,
            max_limit=settings.limit_max,
            initial_limit=settings.limit_initial,
            rate_max=settings.rate_max,
            clock=clock,
        )
        self._max_attempts = max_attempts
        self._retry_budget_s = retry_budget_s
        self._clock = clock
        headers = {"content-type": "application/json"}
        if settings.api_token:
            headers["authorization"] = f"Bearer {settings.api_token}"
        self._client: ApiClient
        if settings.http_client == "httpx":
            self._client = HttpxClient(
                settings.api_url,
                headers,
                timeout_s=settings.api_timeout_s,
                connect_timeout_s=CONNECT_TIMEOUT_S,
                client_cert=settings.api_client_cert,
                client_key=settings.api_client_key,
            )
        else:
            self._client = HttpClient(
                settings.api_url,
                headers,
                timeout_s=settings.api_timeout_s,
                connect_timeout_s=CONNECT_TIMEOUT_S,
            )

    @property
    def limiter(self) -> AdaptiveLimiter:
        return self._limiter

    async def probe(self) -> SystemicError | None:
        """One POST of a fixed probe SMS: the SystemicError if the fault persists, else None.

        Called by the engine now and then while it is halted on a SystemicError; the call
        goes through the limiter like any other (a Retry-After pause delays it).
        """
        self._check_open()
        outcome = await self._call(orjson.dumps(PROBE_SMS), retry=False)
        return outcome if isinstance(outcome, SystemicError) else None

    async def aclose(self) -> None:
        """Close the connection pool; later calls to process_many raise RuntimeError."""
        await super().aclose()
        await self._client.aclose()

    async def process_many(self, batch: Sequence[Sms]) -> list[Outcome]:
        """Every SMS concurrently; the limiter decides how many calls are in flight."""
        self._check_open()
        return list(await asyncio.gather(*(self._process_one(sms) for sms in batch)))

    async def _process_one(self, sms: Sms) -> Outcome:
        """One SMS: a call, and more while it is transient and attempts and budget allow."""
        payload = orjson.dumps(
            {"id": sms.id, "sender": sms.sender, "body": sms.body, "received_at": sms.received_at}
        )
        started = self._clock.monotonic()
        attempt = 1
        outcome = await self._call(payload, retry=False, key=idempotency_key(sms.id, attempt))
        while isinstance(outcome, TransientError) and attempt < self._max_attempts:
            elapsed = self._clock.monotonic() - started
            if elapsed + (outcome.retry_after or 0.0) >= self._retry_budget_s:
                break
            attempt += 1
            logger.debug("retrying SMS after %s (attempt %d)", outcome.reason, attempt)
            outcome = await self._call(payload, retry=True, key=idempotency_key(sms.id, attempt))
        PROCESSING_DURATION.observe(self._clock.monotonic() - started)
        return outcome

    async def _call(self, payload: bytes, *, retry: bool, key: str | None = None) -> Outcome:
        """One API call under one permit; the permit reports ignore() if we are cancelled.
        A retry is granted before calls still queued (its batch waits for nothing else)."""
        with await self._limiter.acquire(first=retry) as permit:
            started = self._clock.monotonic()
            try:
                reply = await self._client.post(payload, idempotency_key=key)
            except HttpClientError as exc:
                return self._failed(exc, permit)
            latency = self._clock.monotonic() - started
            API_LATENCY.observe(latency)
            return self._classify(reply, permit, latency)

    @staticmethod
    def _failed(exc: HttpClientError, permit: Permit) -> Outcome:
        """A call without a usable answer: what it says about the upstream, and the outcome."""
        API_RESPONSES.labels("timeout" if isinstance(exc, Timeout) else "error").inc()
        if isinstance(exc, Timeout):
            permit.dropped()
            return TransientError("parse API: timed out", reason="timeout")
        if isinstance(exc, BadEncoding):
            permit.ignore()  # the upstream's bug, not its load
            return TransientError(
                "parse API: response body could not be decoded (bad Content-Encoding)",
                reason="bad_encoding",
            )
        if isinstance(exc, ProtocolFault):
            permit.ignore()  # a broken or oversized answer: the upstream's bug, not its load
            return TransientError(f"parse API: {exc}", reason="api_protocol")
        if isinstance(exc, InvalidUrl):
            permit.ignore()
            return SystemicError(
                "parse API: the URL's host cannot be used (check STREAM_API_URL)",
                reason="url",
                setting="STREAM_API_URL",
            )
        cause = _systemic_cause(exc)
        if cause is not None:
            permit.ignore()
            what = "TLS handshake failed" if cause == "tls" else "host name not found"
            return SystemicError(
                f"parse API: {what} (check STREAM_API_URL)",
                reason=cause,
                setting="STREAM_API_URL",
            )
        permit.dropped()
        reason = "connect" if isinstance(exc, ConnectFailed) else "transport"
        return TransientError(f"parse API: {type(exc).__name__}", reason=reason)

    def _classify(self, reply: Reply, permit: Permit, latency: float) -> Outcome:
        status = reply.status
        quota = parse_quota(reply.headers, now_unix=self._clock.time())
        if 200 <= status < 300:
            API_RESPONSES.labels("2xx").inc()
            permit.success(latency, quota)
            try:
                return validate_result(orjson.loads(reply.body))
            except orjson.JSONDecodeError:
                return PermanentError(
                    f"parse API: HTTP {status} body is not JSON", reason="invalid_result"
                )
            except PermanentError as exc:
                return exc
        if status == 408 or status == 429 or 500 <= status < 600:
            API_RESPONSES.labels("429" if status == 429 else f"{status // 100}xx").inc()
            retry_after = parse_retry_after(
                reply.headers.get("retry-after"), datetime.fromtimestamp(self._clock.time(), UTC)
            )
            if status in REFUSAL_STATUSES:
                permit.dropped(retry_after, status=status, quota=quota)
            elif status in CAPACITY_STATUSES:
                permit.dropped(retry_after)
            else:
                permit.ignore()
            return TransientError(
                f"parse API: HTTP {status}", reason=f"http_{status}", retry_after=retry_after
            )
        API_RESPONSES.labels("4xx" if 400 <= status < 500 else "error").inc()
        permit.ignore()
        setting = SYSTEMIC_STATUSES.get(status)
        if setting is not None:
            return SystemicError(
                f"parse API: HTTP {status} (check {setting})",
                reason=f"http_{status}",
                setting=setting,
            )
        return PermanentError(f"parse API: HTTP {status}", reason=f"http_{status}")
