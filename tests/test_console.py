"""The status topic, `stream status` and `stream console` against the real stack, the page
read by headless Chromium as a person would see it (Debian's `chromium`; skipped with the
reason where it is not installed)."""

from __future__ import annotations

import asyncio
import html
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from conftest import REPO_ROOT, NewTopicFactory, UniqueName
from pipeline_support import env_for, produce, running, settings_for, sms_value
from support import eventually

from stream.adapters.status import MemberView, StatusReporter, read_statuses
from stream.adapters.topics import STATUS_TOPIC_CONFIGS, ensure_status_topic, status_topic
from stream.config import Settings
from stream.devkit.stack import StackEndpoints
from stream.devkit.stack.process import free_port
from stream.tools.console import serve_console
from stream.tools.status import EXIT_HALTED, EXIT_NO_MEMBERS, GroupReader, _retry_pattern

ARTEFACTS = REPO_ROOT / "test-artefacts" / "console"
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
INTERVAL_S = 0.5
SECRET_SENDER = "+254711223344"
SECRET_BODY = "Your secret code is 99887766"


def chromium(url: str, *, screenshot: Path | None = None) -> str:
    """The DOM of `url` after its scripts ran (`--dump-dom`), or a screenshot of it."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        args = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=3000",
            "--window-size=1280,1400",
        ]
        args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        done = subprocess.run([*args, url], capture_output=True, timeout=60, check=True)
    return done.stdout.decode()


def text_of(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match is not None, element_id
    return html.unescape(match.group(1))


def stream_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream", *args], env=env_for(settings), capture_output=True,
        text=True, timeout=60, check=False,
    )


async def status_json(settings: Settings) -> tuple[int, dict[str, Any]]:
    done = await asyncio.to_thread(stream_cli, settings, "status", "--json")
    assert done.returncode in (0, EXIT_HALTED, EXIT_NO_MEMBERS), done.stderr
    return done.returncode, orjson.loads(done.stdout)


async def console_sampled(url: str, check: Callable[[dict[str, Any]], bool]) -> None:
    """Wait until the console's own sample (every 2 s) has caught up with `check`."""

    async def sampled() -> bool:
        async with httpx.AsyncClient(timeout=10) as client:
            state = (await client.get(f"{url}/api/state")).json()
        return state["view"] is not None and check(state["view"])

    await eventually(sampled, within=30, what="the console's sample caught up")


def test_the_status_topic_looks_like_neither_a_retry_nor_a_dlq_topic() -> None:
    settings = Settings(topic="sms")
    name = status_topic(settings.topic)
    assert not _retry_pattern(settings.topic).match(name)
    assert name not in (*settings.retry_topics, settings.dlq_topic)


async def test_a_member_whose_status_topic_is_unreachable_goes_on(
    stack: StackEndpoints, unique_name: UniqueName
) -> None:
    """The reporter swallows every Kafka failure: publishing returns, closing returns."""
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", topic=unique_name("topic"))
    reporter = StatusReporter(settings, "m1", _idle_view())
    started = time.monotonic()
    reporter.start()
    await asyncio.sleep(0.2)
    await reporter.aclose()
    assert time.monotonic() - started < 15
    assert reporter.bytes_sent == 0


def _idle_view() -> MemberView:
    return MemberView(assignment=list, paused=list, in_flight=lambda: 0, halt=lambda: None)


class Member:
    """`stream run` as a child process that reports its status every INTERVAL_S."""

    def __init__(self, settings: Settings, log: Path, **env: str) -> None:
        self.settings = settings.replace(metrics_port=free_port())
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "run"],
            env=env_for(self.settings) | {"STREAM_STATUS_INTERVAL": f"{int(INTERVAL_S * 1000)}ms"}
            | env,
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 60)
        self._log.close()


@pytest.fixture
async def console_url(stack: StackEndpoints) -> AsyncIterator[Any]:
    """`await console_url(settings)`: a console serving on a free port; stopped after."""
    stops: list[tuple[asyncio.Event, asyncio.Task[Any]]] = []

    async def start(settings: Settings) -> str:
        port = free_port()
        started, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(serve_console(settings, "127.0.0.1", port, started, stop))
        stops.append((stop, task))
        await asyncio.wait_for(started.wait(), 30)
        return f"http://127.0.0.1:{port}"

    yield start
    for stop, task in stops:
        stop.set()
        await asyncio.wait_for(task, 30)


@needs_chromium
async def test_status_and_console_show_the_group_as_it_is(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName,
    tmp_path: Path, console_url: Any,
) -> None:
    """Two members; what `stream status` and the page show is checked against the real
    state: members, lag, DLQ reasons, a halted member's reason, a stale one after kill -9."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    topic = await new_topic(4)
    settings = settings_for(stack, topic, unique_name("db"), unique_name("group"),
                            status_interval_s=INTERVAL_S)
    member_b = Member(settings, tmp_path / "b.log",
                      STREAM_DLQ_HALT_MIN="4", STREAM_DLQ_HALT_RATIO="0.1")
    try:
        async with running(settings):
            async def split() -> dict[str, Any] | None:
                statuses = await read_statuses(settings)
                owned = {k: {p for t, p in s["partitions"] if t == topic}
                         for k, s in statuses.items()}
                both = len(owned) == 2 and all(owned.values())
                return statuses if both and sum(map(len, owned.values())) == 4 else None

            statuses = await eventually(split, within=60, what="two members sharing 4 partitions")
            b_key = next(k for k, s in statuses.items() if s["pid"] == member_b.proc.pid)
            a_key = next(k for k in statuses if k != b_key)
            part = {k: min(p for t, p in s["partitions"] if t == topic)
                    for k, s in statuses.items()}
            await produce(stack.kafka_bootstrap, topic, [sms_value(n) for n in range(20)])
            await produce(stack.kafka_bootstrap, topic, [b"{not json"], partition=part[a_key])
            secret = {"id": "s-1", "sender": SECRET_SENDER, "body": SECRET_BODY}
            await produce(stack.kafka_bootstrap, topic, [orjson.dumps(secret)],
                          partition=part[a_key])

            async def settled() -> dict[str, Any] | None:
                code, view = await status_json(settings)
                done = view["lag"]["main"] == 0 and view["dlq"]["depth"] == 2
                # Member A runs in this process: its counters also hold other tests' records.
                reported = {"invalid_json", "missing_field"} <= set(view["dlq"]["by_reason"])
                return view if done and reported and code == 0 else None

            view = await eventually(settled, within=60, what="all records settled")
            assert view["live_members"] == 2
            assert {m["state"] for m in view["members"]} == {"live"}
            assert all(p["owner"] in (a_key, b_key) for p in view["partitions"])

            url = await console_url(settings)
            dom = await asyncio.to_thread(chromium, f"{url}/?dlq=1")
            (ARTEFACTS / "healthy.html").write_text(dom)
            assert text_of(dom, "live-members") == "2"
            assert text_of(dom, "main-lag") == "0"
            assert text_of(dom, "dlq-depth") == "2"
            reasons = set(re.findall(r'<tr data-reason="([^"]+)"', dom))
            assert reasons == {"invalid_json", "missing_field"}
            assert "s-1" in dom, "the DLQ browser shows the record"
            assert SECRET_SENDER not in dom
            assert SECRET_BODY not in dom
            await asyncio.to_thread(chromium, url, screenshot=ARTEFACTS / "healthy.png")

            await produce(stack.kafka_bootstrap, topic, [b"{bad"] * 6, partition=part[b_key])

            async def halted() -> dict[str, Any] | None:
                code, view = await status_json(settings)
                return view if code == EXIT_HALTED else None

            view = await eventually(halted, within=60, what="member B halted")
            assert [(h["member"], h["reason"]) for h in view["halts"]] == [(b_key, "dlq_rate")]
            await console_sampled(url, lambda view: bool(view["halts"]))
            dom = await asyncio.to_thread(chromium, url)
            assert re.search(r'class="halt" data-reason="dlq_rate"', dom)

            await member_b.stop(signal.SIGKILL)

            async def stale() -> dict[str, Any] | None:
                _, view = await status_json(settings)
                states = {m["member"]: m["state"] for m in view["members"]}
                return view if states.get(b_key) == "stale" else None

            view = await eventually(stale, within=30, what="member B shown stale")
            assert view["live_members"] == 1
            await console_sampled(url, lambda view: view["live_members"] == 1)
            dom = await asyncio.to_thread(chromium, url)
            (ARTEFACTS / "stale.html").write_text(dom)
            assert text_of(dom, "live-members") == "1"
            assert text_of(dom, "stale-members") == "1"
            assert f'data-state="stale" data-member="{b_key}"' in dom
            await asyncio.to_thread(chromium, url, screenshot=ARTEFACTS / "stale.png")
        code, view = await status_json(settings)
        assert a_key not in {m["member"] for m in view["members"]}, "A left: its tombstone"
        assert code == EXIT_NO_MEMBERS
    finally:
        await member_b.stop(signal.SIGKILL)


async def test_nothing_a_visitor_sends_changes_the_group_or_unmasks(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName,
    kafka_admin: Any, console_url: Any,
) -> None:
    topic = await new_topic(2)
    settings = settings_for(stack, topic, unique_name("db"), unique_name("group"),
                            status_interval_s=INTERVAL_S)
    secret = {"id": "s-2", "sender": SECRET_SENDER, "body": SECRET_BODY}
    async with running(settings):
        await produce(stack.kafka_bootstrap, topic, [orjson.dumps(secret), *(
            orjson.dumps(sms_value(n)) for n in range(4))])

        async def settled() -> dict[str, Any] | None:
            async with GroupReader(settings) as reader:
                view = await reader.read()
            return view if view["lag"]["main"] == 0 and view["dlq"]["depth"] == 1 else None

        await eventually(settled, within=60, what="records settled")
        groups_before = sorted(g[0] for g in await kafka_admin.list_consumer_groups())
        offsets_before = await kafka_admin.list_consumer_group_offsets(settings.group_id)
        url = await console_url(settings)
        bodies: list[bytes] = []
        # A connection each (`connection: close`): one answer cannot colour the next.
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "GET"):
                for path in ("/", "/api/state", "/api/dlq", "/api/dlq?raw=1", "/?unmask=1",
                             "/api/replay", "/../etc/passwd", "//api/dlq", "/api/state/"):
                    response = await client.request(
                        method, path, content=b'{"reason": "invalid_json", "raw": true}',
                        headers={"x-raw": "1", "cookie": "raw=1", "connection": "close"},
                    )
                    assert response.status_code in (200, 404, 405), (method, path)
                    if method != "GET":
                        assert response.status_code != 200, (method, path)
                    bodies.append(response.content)
        assert any(b"s-2" in body for body in bodies), "the DLQ record was shown, masked"
        for body in bodies:
            assert SECRET_SENDER.encode() not in body
            assert SECRET_BODY.encode() not in body
        assert sorted(g[0] for g in await kafka_admin.list_consumer_groups()) == groups_before
        assert await kafka_admin.list_consumer_group_offsets(settings.group_id) == offsets_before
        async with GroupReader(settings) as reader:
            assert (await reader.read())["live_members"] == 1


async def test_the_status_topic_is_created_compacted(
    stack: StackEndpoints, new_topic: NewTopicFactory, kafka_admin: Any
) -> None:
    topic = await new_topic(1)
    settings = Settings(kafka_bootstrap=stack.kafka_bootstrap, topic=topic)
    await ensure_status_topic(settings)
    await ensure_status_topic(settings)  # idempotent
    (described,) = await kafka_admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, status_topic(topic))]
    )
    configs = {name: value for name, value, *_ in described.resources[0][4]}
    for name, value in STATUS_TOPIC_CONFIGS.items():
        assert configs[name] == value


@needs_chromium
async def test_page_load_time_with_3_members_and_18_partitions(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName,
    console_url: Any,
) -> None:
    """Reported, not asserted: the page's own measure from navigation start to its first
    render, against three members' status records over 18 partitions."""
    topic = await new_topic(18)
    settings = Settings(kafka_bootstrap=stack.kafka_bootstrap, topic=topic,
                        group_id=unique_name("group"))
    await ensure_status_topic(settings)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        for n in range(3):
            record = {"member": f"m{n}", "at": time.time(), "interval_s": 60, "host": "h",
                      "partitions": [[topic, p] for p in range(n, 18, 3)], "in_per_s": 650.0,
                      "stored_per_s": 650.0, "in_flight": 40, "halt": None, "limiter": {},
                      "dlq_by_reason": {"invalid_json": n}}
            await producer.send_and_wait(status_topic(topic), orjson.dumps(record),
                                         key=f"m{n}".encode())
    finally:
        await producer.stop()
    url = await console_url(settings)
    loads = []
    for _ in range(2):
        dom = await asyncio.to_thread(chromium, url)
        assert text_of(dom, "live-members") in ("0", "3")
        loads.append(float(re.search(r'data-load-ms="([\d.]+)"', dom).group(1)))  # type: ignore[union-attr]
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    (ARTEFACTS / "load-ms.txt").write_text(" ".join(f"{ms:.1f}" for ms in loads) + "\n")
    print(f"console page load, 3 members / 18 partitions: {loads} ms", file=sys.stderr)


async def test_a_member_silent_for_an_hour_is_no_longer_shown(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName
) -> None:
    topic = await new_topic(1)
    settings = Settings(kafka_bootstrap=stack.kafka_bootstrap, topic=topic,
                        group_id=unique_name("group"))
    await ensure_status_topic(settings)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        for key, age_s in (("crashed-long-ago", 3700), ("crashed-just-now", 60)):
            record = {"member": key, "at": time.time() - age_s, "interval_s": 5,
                      "partitions": []}
            await producer.send_and_wait(status_topic(topic), orjson.dumps(record),
                                         key=key.encode())
    finally:
        await producer.stop()
    code, view = await status_json(settings)
    assert [(m["member"], m["state"]) for m in view["members"]] == [("crashed-just-now", "stale")]
    assert code == EXIT_NO_MEMBERS


async def test_console_binds_to_localhost_by_default_and_stops_on_sigterm(
    stack: StackEndpoints, new_topic: NewTopicFactory, unique_name: UniqueName
) -> None:
    topic = await new_topic(1)
    settings = settings_for(stack, topic, unique_name("db"), unique_name("group"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream", "console", "--port", "0", env=env_for(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        async with httpx.AsyncClient(timeout=10) as client:
            page = await client.get(f"http://127.0.0.1:{match.group(1)}/")
        assert page.status_code == 200
        assert "script-src 'sha256-" in page.headers["content-security-policy"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
