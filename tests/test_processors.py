"""Processors over real loopback HTTP: the reference upstream, or a scripted HttpServer."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from stream.app import build_processor
from stream.config import Settings
from stream.devkit.upstream import ReferenceUpstream, UpstreamBehaviour
from stream.errors import PermanentError, ProcessingError, SystemicError, TransientError
from stream.observability.httpserver import HttpServer, Request, Response, json_response
from stream.processors.builtin import BuiltinProcessor
from stream.processors.http import (
    MAX_RETRY_AFTER_S,
    PROBE_SMS,
    HttpProcessor,
    idempotency_key,
    parse_quota,
    parse_retry_after,
)
from stream.processors.limiter import Quota
from stream.sms.models import Sms
from stream.sms.parser import parse_sms

BODIES = [
    ("MPESA", "QK12AB Confirmed. Ksh1,500.00 sent to JOHN DOE 0712345678 on 1/2/24."),
    ("Safaricom", "You have received 250 bonus MB valid until midnight."),
    ("+254700000001", "Hi, are we still meeting tomorrow?"),
]
TOKEN = "tok-5f3a9c-very-secret"
RESULT = parse_sms("Ksh100 received", "MPESA")


def _sms(n: int, sender: str = "MPESA", body: str = "Ksh100 received") -> Sms:
    return Sms(
        id=f"sms-{n}",
        sender=sender,
        body=body,
        received_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        recipient=None,
        meta=None,
        extra={},
    )


def _batch() -> list[Sms]:
    return [_sms(n, sender, body) for n, (sender, body) in enumerate(BODIES)]


def _settings(url: str, **changes: object) -> Settings:
    return Settings(processor="http", api_url=url, limit_initial=8).replace(**changes)


def _responses(status_class: str) -> float:
    value = REGISTRY.get_sample_value("stream_api_responses_total", {"status_class": status_class})
    return value or 0.0


class Scripted:
    """A parse API that answers whatever the test queued (then `default`), and records."""

    def __init__(self) -> None:
        self.queue: list[Response] = []
        self.default = json_response(RESULT)
        self.requests: list[Request] = []

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        return self.queue.pop(0) if self.queue else self.default


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, str]]:
    script = Scripted()
    async with HttpServer({("POST", "/v1/parse"): script.handle}) as server:
        yield script, f"http://127.0.0.1:{server.port}/v1/parse"


async def test_builtin_parses_in_order() -> None:
    async with BuiltinProcessor() as processor:
        assert processor.name == "builtin"
        results = await processor.process_many(_batch())
    assert results == [parse_sms(body, sender) for sender, body in BODIES]


async def test_builtin_refuses_work_after_close() -> None:
    processor = BuiltinProcessor()
    await processor.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await processor.process_many(_batch())


async def test_build_processor_follows_the_setting() -> None:
    builtin = build_processor(Settings())
    assert isinstance(builtin, BuiltinProcessor)
    http = build_processor(_settings("http://127.0.0.1:1/v1/parse"))
    try:
        assert isinstance(http, HttpProcessor)
        assert http.limiter is not None
    finally:
        await http.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await http.process_many(_batch())


async def test_http_result_equals_builtin_and_sends_the_sms() -> None:
    async with (
        ReferenceUpstream() as up,
        HttpProcessor(_settings(up.url)) as processor,
    ):
        ok_before = _responses("2xx")
        results = await processor.process_many(_batch())
        assert results == await BuiltinProcessor().process_many(_batch())
        assert up.stats()["accepted"] == len(BODIES)
        assert _responses("2xx") - ok_before == len(BODIES)


async def test_http_posts_the_sms_fields(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    async with HttpProcessor(_settings(url)) as processor:
        await processor.process_many([_sms(7)])
    (request,) = script.requests
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert orjson.loads(request.body) == {
        "id": "sms-7",
        "sender": "MPESA",
        "body": "Ksh100 received",
        "received_at": "2024-01-02T03:04:05+00:00",
    }


def _http_date(delta_s: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=delta_s), usegmt=True)


@pytest.mark.parametrize(
    ("response", "kind", "reason", "status_class"),
    [
        (json_response({}, 429, {"retry-after": "7"}), TransientError, "http_429", "429"),
        (json_response({}, 503), TransientError, "http_503", "5xx"),
        (json_response({}, 500), TransientError, "http_500", "5xx"),
        (json_response({}, 408), TransientError, "http_408", "4xx"),
        (json_response({}, 400), PermanentError, "http_400", "4xx"),
        (json_response({}, 404), SystemicError, "http_404", "4xx"),
        (json_response({}, 401), SystemicError, "http_401", "4xx"),
        (json_response({}, 403), SystemicError, "http_403", "4xx"),
        (json_response({}, 405), SystemicError, "http_405", "4xx"),
        (json_response({}, 422), PermanentError, "http_422", "4xx"),
        (Response(200, {}, b"<html>not json"), PermanentError, "invalid_result", "2xx"),
        (json_response(["a", "list"]), PermanentError, "invalid_result", "2xx"),
        (json_response({"category": "other"}), PermanentError, "invalid_result", "2xx"),
        (Response(301, {"location": "/moved"}), SystemicError, "http_301", "error"),
        (Response(302, {"location": "/elsewhere"}), SystemicError, "http_302", "error"),
        (Response(307, {"location": "/elsewhere"}), SystemicError, "http_307", "error"),
        (Response(308, {"location": "/moved"}), SystemicError, "http_308", "error"),
        (Response(300, {}), PermanentError, "http_300", "error"),
    ],
    ids=[
        "429",
        "503",
        "500",
        "408",
        "400",
        "404",
        "401",
        "403",
        "405",
        "422",
        "not-json",
        "list",
        "schema",
        "301",
        "302",
        "307",
        "308",
        "300",
    ],
)
async def test_http_classifies_each_answer(
    scripted: tuple[Scripted, str],
    response: Response,
    kind: type[ProcessingError],
    reason: str,
    status_class: str,
) -> None:
    script, url = scripted
    script.default = response
    before = _responses(status_class)
    async with HttpProcessor(_settings(url), max_attempts=1) as processor:
        (outcome,) = await processor.process_many([_sms(1)])
        drops = processor.limiter.state.drops
    assert type(outcome) is kind
    assert isinstance(outcome, ProcessingError)
    assert outcome.reason == reason
    assert _responses(status_class) - before == 1
    # Only load signals shrink the limit: a 500 is about one request, a 4xx about nothing.
    assert drops == (1 if reason in ("http_429", "http_503", "http_408") else 0)
    if reason == "http_429":
        assert isinstance(outcome, TransientError)
        assert outcome.retry_after == 7.0


async def test_http_reads_an_http_date_retry_after(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    script.default = json_response({}, 429, {"retry-after": _http_date(30)})
    async with HttpProcessor(_settings(url), max_attempts=1) as processor:
        (outcome,) = await processor.process_many([_sms(1)])
    assert isinstance(outcome, TransientError)
    assert outcome.retry_after is not None
    assert 25 <= outcome.retry_after <= 31


@pytest.mark.parametrize("as_date", [False, True], ids=["seconds", "http-date"])
async def test_http_429_from_the_reference_upstream(as_date: bool) -> None:
    behaviour = UpstreamBehaviour(rate=0.1, burst=1, retry_after_date=as_date)
    async with (
        ReferenceUpstream(behaviour) as up,
        HttpProcessor(_settings(up.url), max_attempts=1) as processor,
    ):
        (first,) = await processor.process_many([_sms(1)])
        (second,) = await processor.process_many([_sms(2)])
    assert not isinstance(first, ProcessingError)
    assert isinstance(second, TransientError)
    assert second.reason == "http_429"
    assert second.retry_after is not None
    assert second.retry_after >= 1


async def test_transient_answers_are_retried_until_one_succeeds(
    scripted: tuple[Scripted, str],
) -> None:
    script, url = scripted
    script.queue = [json_response({}, 503), json_response({}, 500)]
    async with HttpProcessor(_settings(url)) as processor:
        (outcome,) = await processor.process_many([_sms(1)])
    assert outcome == RESULT
    assert len(script.requests) == 3


async def test_no_retry_when_retry_after_exceeds_the_budget(
    scripted: tuple[Scripted, str],
) -> None:
    script, url = scripted
    script.default = json_response({}, 429, {"retry-after": "60"})
    async with HttpProcessor(_settings(url), retry_budget_s=30) as processor:
        (outcome,) = await processor.process_many([_sms(1)])
    assert isinstance(outcome, TransientError)
    assert outcome.retry_after == 60.0
    assert len(script.requests) == 1


async def test_permanent_answers_are_not_retried(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    script.default = json_response({}, 400)
    async with HttpProcessor(_settings(url)) as processor:
        (outcome,) = await processor.process_many([_sms(1)])
    assert isinstance(outcome, PermanentError)
    assert len(script.requests) == 1


async def test_timeout_is_transient_and_retried() -> None:
    before = _responses("timeout")
    async with (
        ReferenceUpstream(UpstreamBehaviour(black_hole=True)) as up,
        HttpProcessor(_settings(up.url, api_timeout_s=0.2)) as processor,
    ):
        (outcome,) = await processor.process_many([_sms(1)])
        assert up.stats()["black_holed"] == 3
    assert isinstance(outcome, TransientError)
    assert outcome.reason == "timeout"
    assert _responses("timeout") - before == 3


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = _responses("error")
    async with HttpProcessor(_settings(f"http://127.0.0.1:{port}/v1/parse")) as processor:
        (outcome,) = await processor.process_many([_sms(1)])
    assert isinstance(outcome, TransientError)
    assert outcome.reason == "connect"
    assert _responses("error") - before == 3


async def test_token_is_sent_and_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with ReferenceUpstream(token=TOKEN) as up:
        async with HttpProcessor(_settings(up.url, api_token=TOKEN)) as processor:
            authorised = await processor.process_many(_batch())
            shown = [repr(processor), repr(processor.limiter)]
        async with HttpProcessor(_settings(up.url, api_token="wrong-" + TOKEN)) as processor:
            refused = await processor.process_many(_batch())
        async with HttpProcessor(_settings(up.url, api_timeout_s=0.2, api_token=TOKEN)) as slow:
            up.set_behaviour(UpstreamBehaviour(black_hole=True))
            timed_out = await slow.process_many([_sms(1)])
    assert not any(isinstance(r, ProcessingError) for r in authorised)
    assert all(isinstance(r, SystemicError) and r.reason == "http_401" for r in refused)
    assert isinstance(timed_out[0], TransientError)
    outcomes = [*authorised, *refused, *timed_out]
    shown += [str(o) for o in outcomes] + [repr(o) for o in outcomes]
    assert caplog.records  # the client's debug lines were captured
    assert TOKEN not in caplog.text
    assert not [text for text in shown if TOKEN in text]


async def test_calls_run_concurrently() -> None:
    async with (
        ReferenceUpstream(UpstreamBehaviour(latency=0.1)) as up,
        HttpProcessor(_settings(up.url, limit_initial=8)) as processor,
    ):
        results = await processor.process_many([_sms(n) for n in range(16)])
        assert up.stats()["concurrency_high_water"] > 1
    assert not any(isinstance(r, ProcessingError) for r in results)


def test_parse_retry_after_forms() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(None) is None
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 -0000", now) == 30.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("999999") == MAX_RETRY_AFTER_S
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None


@pytest.mark.parametrize(
    ("status", "setting"),
    [
        (401, "STREAM_API_TOKEN"),
        (403, "STREAM_API_TOKEN"),
        (404, "STREAM_API_URL"),
        (405, "STREAM_API_URL"),
    ],
)
async def test_systemic_answers_are_not_retried_and_say_what_to_fix(
    scripted: tuple[Scripted, str], status: int, setting: str
) -> None:
    script, url = scripted
    script.default = json_response({}, status)
    async with HttpProcessor(_settings(url)) as processor:
        outcomes = await processor.process_many([_sms(1), _sms(2)])
        state = processor.limiter.state
    assert len(script.requests) == 2  # one call per SMS: no in-process retry
    for outcome in outcomes:
        assert isinstance(outcome, SystemicError)
        assert (outcome.reason, outcome.setting) == (f"http_{status}", setting)
        assert setting in str(outcome)
        assert "/v1/parse" not in str(outcome)  # the URL's path may hold a secret
    assert (state.drops, state.in_flight, state.limit) == (0, 0, 8)  # ignore(): nothing learnt


async def test_a_tls_failure_is_systemic() -> None:
    async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")  # not TLS
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with HttpProcessor(_settings(f"https://127.0.0.1:{port}/v1/parse")) as processor:
            (outcome,) = await processor.process_many([_sms(1)])
            assert processor.limiter.state.drops == 0
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(outcome, SystemicError)
    assert (outcome.reason, outcome.setting) == ("tls", "STREAM_API_URL")


async def test_an_unknown_host_is_systemic() -> None:
    async with HttpProcessor(_settings("http://does-not-exist.invalid/v1/parse")) as processor:
        (outcome,) = await processor.process_many([_sms(1)])
        assert processor.limiter.state.drops == 0
    assert isinstance(outcome, SystemicError)
    assert (outcome.reason, outcome.setting) == ("dns", "STREAM_API_URL")
    assert "does-not-exist" not in str(outcome)


@pytest.mark.parametrize(
    "url", ["http://a..b/v1/parse", "http://" + "x" * 64 + ".example/v1/parse"]
)
async def test_a_host_that_cannot_be_encoded_is_systemic(url: str) -> None:
    async with HttpProcessor(_settings(url)) as processor:
        (outcome,) = await processor.process_many([_sms(1)])
    assert isinstance(outcome, SystemicError)
    assert (outcome.reason, outcome.setting) == ("url", "STREAM_API_URL")


async def test_a_malformed_answer_is_a_transient_protocol_fault() -> None:
    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-6\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hostile, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with HttpProcessor(
            _settings(f"http://127.0.0.1:{port}/v1/parse"), max_attempts=1
        ) as processor:
            (outcome,) = await processor.process_many([_sms(1)])
            drops = processor.limiter.state.drops
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(outcome, TransientError)
    assert outcome.reason == "api_protocol"
    assert drops == 0  # the upstream's bug, not its load


async def test_each_attempt_carries_its_own_idempotency_key(
    scripted: tuple[Scripted, str],
) -> None:
    script, url = scripted
    script.queue = [json_response({}, 500), json_response({}, 502)]
    async with HttpProcessor(_settings(url)) as processor:
        (outcome,) = await processor.process_many([_sms(7)])
        await processor.process_many([_sms(8, body="x" * 3)])
    assert not isinstance(outcome, ProcessingError)
    keys = [request.headers["idempotency-key"] for request in script.requests]
    assert keys == ['"sms-7/1"', '"sms-7/2"', '"sms-7/3"', '"sms-8/1"']
    assert {request.headers["user-agent"] for request in script.requests} == {"stream/0.1.0"}


def test_an_idempotency_key_of_an_unusual_id_is_a_digest() -> None:
    key = idempotency_key('é "quoted"\n', 2)
    assert key.startswith('"sha256-')
    assert key.endswith('/2"')
    assert key.isascii()
    assert key.isprintable()


async def test_probe_reports_a_fault_until_it_clears() -> None:
    async with ReferenceUpstream(token=TOKEN) as up:
        async with HttpProcessor(_settings(up.url, api_token="wrong")) as processor:
            fault = await processor.probe()
        async with HttpProcessor(_settings(up.url, api_token=TOKEN)) as processor:
            cleared = await processor.probe()
        stats = up.stats()
    assert isinstance(fault, SystemicError)
    assert fault.reason == "http_401"
    assert cleared is None
    assert (stats["requests"], stats["unauthorized_401"], stats["accepted"]) == (2, 1, 1)


async def test_probe_sends_the_fixed_probe_sms(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    async with HttpProcessor(_settings(url)) as processor:
        assert await processor.probe() is None
    (request,) = script.requests
    assert orjson.loads(request.body) == PROBE_SMS


async def test_an_undecodable_body_is_a_transient_upstream_error(
    scripted: tuple[Scripted, str],
) -> None:
    script, url = scripted
    script.default = Response(
        200, {"content-type": "application/json", "content-encoding": "gzip"}, b"not gzip at all"
    )
    async with HttpProcessor(_settings(url), max_attempts=2) as processor:
        (outcome,) = await processor.process_many([_sms(1)])
        assert processor.limiter.state.drops == 0
    assert isinstance(outcome, TransientError)
    assert outcome.reason == "bad_encoding"
    assert len(script.requests) == 2  # retried like any transient answer


async def test_refusals_reach_the_limiter_as_rate_signals(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    script.default = json_response({}, 429, {"retry-after": "1"})
    async with HttpProcessor(_settings(url), max_attempts=1) as processor:
        await processor.process_many([_sms(1)])
        state = processor.limiter.state
    assert (state.drops, state.refusals, state.decreases) == (1, 1, 0)


async def test_quota_headers_pace_the_calls(scripted: tuple[Scripted, str]) -> None:
    script, url = scripted
    script.default = json_response(
        RESULT, 200, {"ratelimit": '"p";r=5;t=1', "ratelimit-policy": '"p";q=10;w=1'}
    )
    async with HttpProcessor(_settings(url), max_attempts=1) as processor:
        await processor.process_many([_sms(1)])
        state = processor.limiter.state
    assert state.source == "headers"
    assert state.paced_rate is not None
    assert state.paced_rate <= 5.0


def test_parse_quota_formats() -> None:
    def quota(**headers: str) -> Quota | None:
        return parse_quota(
            httpx.Headers({k.replace("_", "-"): v for k, v in headers.items()}), 1e9 + 100
        )

    assert quota() is None
    assert quota(x_ratelimit_remaining="7") is None  # no reset: nothing to pace to
    assert quota(
        x_ratelimit_limit="60", x_ratelimit_remaining="7", x_ratelimit_reset="30"
    ) == Quota(7, 30, 60, None)
    # A Unix time, not a delta: 20 s after the `now` given.
    assert quota(x_ratelimit_remaining="7", x_ratelimit_reset=str(int(1e9 + 120))) == Quota(
        7, 20, None, None
    )
    assert quota(
        ratelimit_limit="100, 100;w=60", ratelimit_remaining="42", ratelimit_reset="9"
    ) == Quota(42, 9, 100, 60)
    assert quota(ratelimit='"default";r=50;t=30', ratelimit_policy='"default";q=100;w=60') == Quota(
        50, 30, 100, 60
    )
    assert quota(ratelimit='"default";r=50;t=30') == Quota(50, 30, None, None)
    assert quota(x_ratelimit_remaining="many", x_ratelimit_reset="30") is None
