"""The reference upstream over real HTTP: every fault it can inject, and its stats."""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from support import ManualClock

from stream.devkit.upstream import (
    Phase,
    ReferenceUpstream,
    UpstreamBehaviour,
    main,
    parse_schedule,
)
from stream.processors.http import parse_quota
from stream.sms.parser import parse_sms

WAIT_S = 5.0  # bound on waiting for a condition; never a fixed sleep
POLL_S = 0.01
SMS = {"id": "sms-1", "sender": "MPESA", "body": "Confirmed. Ksh1,500.00 sent to JOHN DOE"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT_S) as c:
        yield c


async def _until(predicate: Callable[[], bool]) -> None:
    """Wait (bounded by WAIT_S) for a condition on the upstream's own state to hold."""
    async with asyncio.timeout(WAIT_S):
        while True:
            if predicate():
                return
            await asyncio.sleep(POLL_S)


async def _burst(client: httpx.AsyncClient, url: str, n: int) -> list[httpx.Response]:
    return list(await asyncio.gather(*(client.post(url, json=SMS) for _ in range(n))))


async def _statuses_until(client: httpx.AsyncClient, url: str, wanted: int) -> list[int]:
    """POST until the answer is `wanted` (bounded by WAIT_S); the statuses seen."""
    seen: list[int] = []
    async with asyncio.timeout(WAIT_S):
        while not seen or seen[-1] != wanted:
            seen.append((await client.post(url, json=SMS)).status_code)
            await asyncio.sleep(POLL_S)
    return seen


async def test_answers_the_parser_result(client: httpx.AsyncClient) -> None:
    async with ReferenceUpstream() as up:
        response = await client.post(up.url, json={**SMS, "received_at": "2024-01-01T00:00:00Z"})
        assert response.status_code == 200
        assert response.json() == parse_sms(SMS["body"], SMS["sender"])
        assert up.stats()["accepted"] == 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not json", "body is not valid JSON"),
        (b"[1, 2]", "body must be a JSON object"),
        (b'{"sender": "x", "body": "y"}', "id must be a non-empty string"),
        (b'{"id": "1", "body": 5}', "body must be a string"),
        (b'{"id": "1", "body": "y", "sender": null}', "sender must be a string"),
    ],
    ids=["not-json", "array", "no-id", "body-type", "sender-type"],
)
async def test_invalid_request_is_400_with_a_reason(
    client: httpx.AsyncClient, content: bytes, reason: str
) -> None:
    async with ReferenceUpstream() as up:
        response = await client.post(up.url, content=content)
        assert response.status_code == 400
        assert response.json() == {"error": "invalid_request", "reason": reason}
        assert up.stats()["bad_request_400"] == 1


async def test_bearer_token_is_required_when_set(client: httpx.AsyncClient) -> None:
    async with ReferenceUpstream(token="s3cret") as up:
        assert (await client.post(up.url, json=SMS)).status_code == 401
        wrong = await client.post(up.url, json=SMS, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        good = await client.post(up.url, json=SMS, headers={"authorization": "Bearer s3cret"})
        assert good.status_code == 200
        assert (await client.get(up.base_url + "/stats")).status_code == 200
        assert up.stats()["unauthorized_401"] == 2


async def test_rate_beyond_the_token_bucket_is_429_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    rate, burst, n = 20.0, 2.0, 40
    async with ReferenceUpstream(UpstreamBehaviour(rate=rate, burst=burst)) as up:
        started = time.monotonic()
        responses = await _burst(client, up.url, n)
        elapsed = time.monotonic() - started
        ok = [r for r in responses if r.status_code == 200]
        limited = [r for r in responses if r.status_code == 429]
        assert len(ok) + len(limited) == n
        assert 1 <= len(ok) <= burst + rate * elapsed + 1
        assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
        stats = up.stats()
        assert (stats["accepted"], stats["rejected_429"]) == (len(ok), len(limited))
        # The bucket refills: a request succeeds again once a token is back.
        assert (await _statuses_until(client, up.url, 200))[-1] == 200


async def test_retry_after_can_be_an_http_date(client: httpx.AsyncClient) -> None:
    behaviour = UpstreamBehaviour(rate=0.1, burst=1, retry_after_date=True)
    async with ReferenceUpstream(behaviour) as up:
        responses = await _burst(client, up.url, 3)
        limited = [r for r in responses if r.status_code == 429]
        assert limited
        for response in limited:
            when = parsedate_to_datetime(response.headers["retry-after"])
            assert when.tzinfo is not None
            assert when > datetime.now(UTC).replace(microsecond=0)


async def test_concurrency_beyond_the_cap_is_503(client: httpx.AsyncClient) -> None:
    async with ReferenceUpstream(UpstreamBehaviour(max_concurrency=3, latency=0.5)) as up:
        responses = await _burst(client, up.url, 12)
        statuses = [r.status_code for r in responses]
        assert set(statuses) == {200, 503}
        stats = up.stats()
        assert stats["concurrency_high_water"] == 3
        assert stats["concurrency"] == 0
        assert stats["rejected_503"] == statuses.count(503) >= 1


async def test_error_share_answers_500(client: httpx.AsyncClient) -> None:
    async with ReferenceUpstream(UpstreamBehaviour(error_rate=0.3), seed=7) as up:
        responses = await _burst(client, up.url, 100)
        errors = sum(r.status_code == 500 for r in responses)
        assert 10 <= errors <= 50
        assert up.stats()["errors_500"] == errors
        up.set_behaviour(UpstreamBehaviour(error_rate=1.0))
        assert {r.status_code for r in await _burst(client, up.url, 10)} == {500}


async def test_black_hole_never_answers(client: httpx.AsyncClient) -> None:
    async with ReferenceUpstream(UpstreamBehaviour(black_hole=True)) as up:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(up.url, json=SMS, timeout=0.2)
        assert up.stats()["black_holed"] == 1
        # Closing drops a black-holed request still waiting, instead of hanging.
        waiting = asyncio.create_task(client.post(up.url, json=SMS, timeout=WAIT_S * 10))
        await _until(lambda: up.stats()["black_holed"] == 2)
    with pytest.raises(httpx.RemoteProtocolError):
        await waiting


async def test_schedule_phases_apply_in_order_and_the_last_holds(
    client: httpx.AsyncClient,
) -> None:
    schedule = [Phase(0.3, {"error_rate": 1.0}), Phase(0.0, {"error_rate": 0.0})]
    async with ReferenceUpstream(schedule=schedule) as up:
        seen = await _statuses_until(client, up.url, 200)
        assert set(seen[:-1]) <= {500}
        assert up.stats()["behaviour"]["error_rate"] == 0.0
        # Reset restarts the schedule from its first phase.
        reset = await client.post(up.base_url + "/stats/reset")
        assert reset.json()["behaviour"]["error_rate"] == 1.0


async def test_schedule_phases_switch_at_their_boundaries(client: httpx.AsyncClient) -> None:
    clock = ManualClock()
    schedule = parse_schedule(
        "1s:rate=0,error_rate=1,2s:error_rate=0,latency=0.001,0s:max_concurrency=7"
    )
    async with ReferenceUpstream(schedule=schedule, clock=clock.monotonic) as up:
        assert (await client.post(up.url, json=SMS)).status_code == 500
        clock.now += 0.999
        assert up.behaviour == UpstreamBehaviour(error_rate=1.0)
        clock.now += 0.002
        assert (await client.post(up.url, json=SMS)).status_code == 200
        assert up.behaviour == UpstreamBehaviour(latency=0.001)
        clock.now += 2.0
        assert up.behaviour == UpstreamBehaviour(latency=0.001, max_concurrency=7)
        clock.now += 1000.0
        assert up.behaviour.max_concurrency == 7
        history = up.stats()["history"]
        assert history == [{"t": 0, "500": 1}, {"t": 1, "ok": 1}]


async def test_control_changes_behaviour_at_run_time(client: httpx.AsyncClient) -> None:
    async with ReferenceUpstream() as up:
        control = up.base_url + "/control"
        changed = await client.post(control, json={"rate": 0.1, "burst": 1})
        assert changed.status_code == 200
        assert changed.json()["behaviour"]["rate"] == 0.1
        statuses = [r.status_code for r in await _burst(client, up.url, 3)]
        assert sorted(statuses) == [200, 429, 429]

        scheduled = await client.post(
            control, json={"rate": 0, "schedule": "0.3s:error_rate=1,0s:error_rate=0"}
        )
        assert scheduled.json()["schedule"] == [
            {"duration": 0.3, "error_rate": 1.0},
            {"duration": 0.0, "error_rate": 0.0},
        ]
        assert scheduled.json()["behaviour"]["error_rate"] == 1.0
        assert set((await _statuses_until(client, up.url, 200))[:-1]) <= {500}

        cleared = await client.post(control, json={"schedule": None})
        assert cleared.json()["schedule"] == []
        current = await client.get(control)
        assert current.json()["behaviour"] == current.json()["base"]


@pytest.mark.parametrize(
    "body",
    [b"[]", b"nope", b'{"rate": -1}', b'{"speed": 1}', b'{"schedule": "x=1"}'],
    ids=["array", "not-json", "negative", "unknown-field", "bad-schedule"],
)
async def test_invalid_control_is_400_and_changes_nothing(
    client: httpx.AsyncClient, body: bytes
) -> None:
    async with ReferenceUpstream(UpstreamBehaviour(rate=5)) as up:
        response = await client.post(up.base_url + "/control", content=body)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_control"
        assert up.behaviour == UpstreamBehaviour(rate=5)


async def test_stats_count_and_reset(client: httpx.AsyncClient) -> None:
    async with ReferenceUpstream(UpstreamBehaviour(max_concurrency=1, latency=0.1)) as up:
        await _burst(client, up.url, 4)
        stats = (await client.get(up.base_url + "/stats")).json()
        assert stats["requests"] == 4
        assert stats["accepted"] + stats["rejected_503"] == 4
        assert stats["concurrency_high_water"] == 1
        assert sum(row.get("ok", 0) for row in stats["history"]) == stats["accepted"]
        reset = (await client.post(up.base_url + "/stats/reset")).json()
        assert (reset["requests"], reset["accepted"], reset["concurrency_high_water"]) == (0, 0, 0)


async def test_a_client_giving_up_is_counted_and_frees_its_slot(
    client: httpx.AsyncClient,
) -> None:
    async with ReferenceUpstream(UpstreamBehaviour(latency=WAIT_S * 10)) as up:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(up.url, json=SMS, timeout=0.1)
        await _until(lambda: up.stats()["concurrency"] == 0)
        assert up.stats()["cancelled"] == 1


def test_schedule_text_form() -> None:
    phases = parse_schedule("20s:rate=200,latency=0.1, 500ms:rate=100,0s:black_hole=true")
    assert phases == (
        Phase(20.0, {"rate": 200.0, "latency": 0.1}),
        Phase(0.5, {"rate": 100.0}),
        Phase(0.0, {"black_hole": True}),
    )


def test_schedule_json_form() -> None:
    text = '[{"duration": 1.5, "max_concurrency": 8}, {"duration": "2s", "error_rate": 0.5}]'
    assert parse_schedule(text) == (
        Phase(1.5, {"max_concurrency": 8}),
        Phase(2.0, {"error_rate": 0.5}),
    )


@pytest.mark.parametrize(
    "text",
    [
        "rate=1",
        "5s:rate",
        "5x:rate=1",
        "5s:speed=1",
        "5s:rate=fast",
        "5s:max_concurrency=1.5",
        '{"duration": 1}',
        '[{"rate": 1}]',
        "5s:black_hole=maybe",
        "5s:error_rate=2",
    ],
)
def test_schedule_errors_name_the_problem(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_schedule(text)


@pytest.mark.parametrize(
    "fields",
    [{"rate": -1.0}, {"error_rate": 1.5}, {"latency": float("inf")}, {"max_concurrency": True}],
)
def test_behaviour_rejects_bad_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(fields))):
        UpstreamBehaviour(**fields)


def test_lognormal_latency_has_the_median_and_the_cap() -> None:
    rng = random.Random(1)
    behaviour = UpstreamBehaviour(latency_median=4.4, latency_sigma=0.3, latency_max=20)
    samples = [behaviour.latency_s(rng) for _ in range(2000)]
    assert 4.0 < statistics.median(samples) < 4.8
    capped = UpstreamBehaviour(latency_median=4.4, latency_sigma=2.0, latency_max=5)
    assert max(capped.latency_s(rng) for _ in range(2000)) == 5
    assert UpstreamBehaviour(latency=0.05).latency_s(rng) == 0.05


def test_cli_rejects_a_bad_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--error-rate", "2"])
    assert exit_info.value.code == 2
    assert "error_rate" in capsys.readouterr().err


async def test_cli_serves_until_sigterm(client: httpx.AsyncClient) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stream",
        "upstream",
        "--port",
        "0",
        "--rate",
        "1000",
        "--schedule",
        "0s:error_rate=0",
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(WAIT_S * 2):
            line = (await process.stdout.readline()).decode()
        assert "listening on http://127.0.0.1:" in line
        url = line.split()[-1]
        assert (await client.post(url, json=SMS)).status_code == 200
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT_S):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_fixed_window_refuses_to_its_end_and_then_resets(
    client: httpx.AsyncClient,
) -> None:
    clock = ManualClock()
    behaviour = UpstreamBehaviour(rate=2.5, window=2.0, quota_headers="x")  # 5 per window
    async with ReferenceUpstream(behaviour, clock=clock.monotonic) as up:
        first = [await client.post(up.url, json=SMS) for _ in range(7)]
        assert [r.status_code for r in first] == [200] * 5 + [429] * 2
        assert [r.headers["x-ratelimit-remaining"] for r in first] == [
            "4", "3", "2", "1", "0", "0", "0"
        ]  # fmt: skip
        assert {r.headers["x-ratelimit-reset"] for r in first} == {"2"}
        assert first[-1].headers["retry-after"] == "2"  # to the window's end
        clock.now += 1.5  # still the same window
        assert (await client.post(up.url, json=SMS)).headers["retry-after"] == "1"
        clock.now += 0.5  # the next window
        again = await client.post(up.url, json=SMS)
        assert again.status_code == 200
        assert again.headers["x-ratelimit-remaining"] == "4"
        assert (up.stats()["accepted"], up.stats()["rejected_429"]) == (6, 3)


@pytest.mark.parametrize("form", ["x", "x-unix", "ietf", "structured"])
async def test_quota_headers_in_each_format_read_back(client: httpx.AsyncClient, form: str) -> None:
    clock = ManualClock()
    behaviour = UpstreamBehaviour(rate=10.0, window=60.0, quota_headers=form)
    async with ReferenceUpstream(behaviour, clock=clock.monotonic) as up:
        await client.post(up.url, json=SMS)
        clock.now += 20.0
        response = await client.post(up.url, json=SMS)
    quota = parse_quota(response.headers)
    assert quota is not None
    assert quota.remaining == 600 - 2
    assert 39 <= quota.reset_s <= 41  # 40 s left in the window, in whole seconds
    if form in ("ietf", "structured"):
        assert (quota.limit, quota.window_s) == (600, 60)


async def test_strict_spacing_refuses_with_a_bare_503(client: httpx.AsyncClient) -> None:
    clock = ManualClock()
    behaviour = UpstreamBehaviour(rate=8.0, burst=1.0, refuse_503=True)  # one per 0.125 s
    async with ReferenceUpstream(behaviour, clock=clock.monotonic) as up:
        assert (await client.post(up.url, json=SMS)).status_code == 200
        clock.now += 0.0625  # half the spacing (binary fractions: exact arithmetic)
        refused = await client.post(up.url, json=SMS)
        clock.now += 0.0625
        assert (await client.post(up.url, json=SMS)).status_code == 200
    assert refused.status_code == 503
    assert "retry-after" not in refused.headers


def test_quota_headers_must_name_a_format() -> None:
    with pytest.raises(ValueError, match="quota_headers"):
        UpstreamBehaviour(quota_headers="bogus")
    assert UpstreamBehaviour().with_changes({"quota_headers": "ietf"}).quota_headers == "ietf"
