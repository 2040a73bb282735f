"""Faults outside us, injected into the real stack, with counts asserted.

Each test ends with the ledger: every valid SMS stored exactly once (MongoDB `_id`s), every
poison record in the DLQ, committed offsets at the log end (lag 0), and for shutdowns the
time `stream run` took to exit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pipeline_support import StreamProcess, committed, produce, read_topic, settings_for, sms_value
from support import eventually

from stream.devkit.stack import MONGO_ENV, StackEndpoints, down, ensure_up, kill
from stream.devkit.stack.process import free_port
from stream.devkit.upstream import ReferenceUpstream, UpstreamBehaviour

pytestmark = pytest.mark.stack

POISON = [b"{not json", b"\xff\xfe", b'{"id": 1}']
# A killed broker answers again within this, JVM start and log recovery included.
BROKER_RESTART_BOUND_S = 30


class DedicatedKafka:
    """A single broker of this test's own (the shared stack's Mongo), to kill -9 and
    restart on the same port."""

    def __init__(self, home: Path, mongo_url: str) -> None:
        self.home = home
        self._env = {MONGO_ENV: mongo_url}
        self.bootstrap = ""

    async def start(self) -> None:
        port = int(self.bootstrap.rsplit(":", 1)[1]) if self.bootstrap else None
        endpoints = await ensure_up(self.home, kafka_port=port, env=self._env)
        self.bootstrap = endpoints.kafka_bootstrap

    async def kill(self) -> None:
        """SIGKILL, returning once the process has let go of its ports."""
        await asyncio.to_thread(kill, self.home, "kafka")

    async def restart_from_shell(self) -> None:
        """`stream stack up` as an operator runs it: from the shell that exported the
        stack's env file to run `stream produce` and `stream run`, so its own broker's
        address is in STREAM_KAFKA_BOOTSTRAP. Fails unless it answers within the bound."""
        exported = dict(line.split("=", 1) for line in
                        (self.home / "env").read_text().splitlines())
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")} | exported
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stream", "stack", "up", "--dir", str(self.home),
            "--timeout", str(BROKER_RESTART_BOUND_S), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()
        assert f"STREAM_KAFKA_BOOTSTRAP={self.bootstrap}" in output.decode(), "same address"


@pytest.fixture
async def dedicated_kafka(stack: StackEndpoints, tmp_path: Path) -> AsyncIterator[DedicatedKafka]:
    kafka = DedicatedKafka(tmp_path / "kafka-stack", stack.mongo_url)
    await kafka.start()
    try:
        yield kafka
    finally:
        await asyncio.to_thread(down, kafka.home)


async def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def _committed_total(bootstrap: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sum((await committed(admin, group, topic)).values())
    finally:
        await admin.close()


async def _ledger(collection: Any, settings: Any, valid: int) -> tuple[int, int]:
    """(documents stored, distinct ids stored); equal when nothing is stored twice."""
    stored = await collection.count_documents({})
    distinct = len(await collection.distinct("_id"))
    assert distinct <= valid
    return stored, distinct


async def test_sigterm_during_a_broker_outage_exits_within_the_drain_bound_and_loses_nothing(
    stack: StackEndpoints, dedicated_kafka: DedicatedKafka, mongo_db: Any, unique_name: Any,
    tmp_path: Path,
) -> None:
    topic = unique_name("topic")
    await _create_topic(dedicated_kafka.bootstrap, topic, 3)
    settings = settings_for(
        _endpoints(dedicated_kafka, stack), topic, mongo_db.name, unique_name("group"),
        drain_timeout_s=3.0,
    )
    total = 3000
    await produce(settings.kafka_bootstrap, topic, [sms_value(n) for n in range(total)])
    collection = mongo_db["messages"]
    first = StreamProcess(settings, tmp_path / "first.log")
    await eventually(lambda: _stored_at_least(collection, 200), what="some SMS stored")
    await dedicated_kafka.kill()
    await asyncio.sleep(0.5)  # let the member notice mid-work; not a condition to wait for
    started = time.monotonic()
    first.signal(signal.SIGTERM)
    code = await first.wait(within=60)
    took = time.monotonic() - started
    print(f"\nSIGTERM during a broker outage: exit {code} after {took:.1f} s "
          f"(drain bound {settings.drain_timeout_s:.0f} s)")
    assert took <= settings.drain_timeout_s + 5 + 2, "drain bound + 5 s (+2 s to start up)"
    assert code in (0, 1)

    await dedicated_kafka.restart_from_shell()
    second = StreamProcess(settings, tmp_path / "second.log")
    try:
        await eventually(lambda: _stored_at_least(collection, total), within=120,
                         what="every SMS stored")
        await eventually(lambda: _committed_is(settings, total), within=60, what="lag 0")
    finally:
        assert await second.stop() == 0
    assert await _ledger(collection, settings, total) == (total, total)


async def test_broker_kill_9_and_restart_on_the_same_port_loses_nothing(
    stack: StackEndpoints, dedicated_kafka: DedicatedKafka, mongo_db: Any, unique_name: Any,
    tmp_path: Path,
) -> None:
    topic = unique_name("topic")
    await _create_topic(dedicated_kafka.bootstrap, topic, 3)
    settings = settings_for(_endpoints(dedicated_kafka, stack), topic, mongo_db.name,
                            unique_name("group"))
    valid = 4000
    values: list[bytes | dict[str, Any]] = [sms_value(n) for n in range(valid)]
    values[1000:1000] = POISON
    await produce(settings.kafka_bootstrap, topic, values[:2000])
    collection = mongo_db["messages"]
    process = StreamProcess(settings, tmp_path / "run.log")
    try:
        await eventually(lambda: _stored_at_least(collection, 300), what="some SMS stored")
        port = dedicated_kafka.bootstrap
        await dedicated_kafka.kill()
        await dedicated_kafka.start()
        assert dedicated_kafka.bootstrap == port, "restarted on the same port"
        await produce(settings.kafka_bootstrap, topic, values[2000:])
        await eventually(lambda: _stored_at_least(collection, valid), within=120,
                         what="every valid SMS stored")
        await eventually(lambda: _committed_is(settings, len(values)), within=90, what="lag 0")
    finally:
        assert await process.stop() == 0
    assert await _ledger(collection, settings, valid) == (valid, valid)
    dead = await read_topic(settings.kafka_bootstrap, settings.dlq_topic)
    assert sorted(r.value for r in dead) == sorted(POISON), "each poison record once"


async def test_second_member_during_slow_api_calls_makes_no_rebalance_storm(
    stack: StackEndpoints, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any,
    tmp_path: Path,
) -> None:
    """API calls longer than the session timeout, and a member joining while they run:
    the first member's revocation ends within the drain bound, batches that did not settle
    are cancelled, the group settles, commits happen and few calls are repeated."""
    topic = await new_topic(partitions=4)
    sms_count = 40
    async with ReferenceUpstream(UpstreamBehaviour(latency=7.0)) as upstream:
        settings = settings_for(
            stack, topic, mongo_db.name, unique_name("group"),
            processor="http", api_url=upstream.url, drain_timeout_s=4.0,
            session_timeout_s=6.0, rebalance_timeout_s=10.0,
        )
        await produce(settings.kafka_bootstrap, topic, [sms_value(n) for n in range(sms_count)])
        collection = mongo_db["messages"]
        first = StreamProcess(settings, tmp_path / "first.log")
        await eventually(lambda: _calls_at_least(upstream, 1), what="calls in flight")
        second = StreamProcess(settings, tmp_path / "second.log")
        try:
            await eventually(lambda: _stored_at_least(collection, sms_count), within=150,
                             what="every SMS stored")
            await eventually(lambda: _committed_is(settings, sms_count), within=60,
                             what="lag 0")
        finally:
            assert await second.stop() == 0
            assert await first.stop() == 0
        calls = upstream.stats()["requests"]
    revocations = sum(
        (tmp_path / name).read_text().count('"partitions revoked"')
        for name in ("first.log", "second.log")
    )
    print(f"\nslow API + joining member: {calls} API calls for {sms_count} SMS, "
          f"{revocations} revocations")
    assert calls <= 1.5 * sms_count
    assert revocations <= 4
    assert await _ledger(collection, settings, sms_count) == (sms_count, sms_count)


def _endpoints(kafka: DedicatedKafka, stack: StackEndpoints) -> StackEndpoints:
    """The dedicated broker with the shared stack's Mongo server."""
    return StackEndpoints(kafka.bootstrap, stack.mongo_url, False)


async def _stored_at_least(collection: Any, n: int) -> bool:
    return bool(await collection.count_documents({}) >= n)


async def _committed_is(settings: Any, n: int) -> bool:
    return await _committed_total(settings.kafka_bootstrap, settings.group_id,
                                  settings.topic) == n


async def _calls_at_least(upstream: ReferenceUpstream, n: int) -> bool:
    return bool(upstream.stats()["requests"] >= n)


async def test_wrong_token_halts_without_dead_lettering_and_resumes_once_fixed(
    stack: StackEndpoints, new_topic: Any, mongo_db: Any, unique_name: Any, kafka_admin: Any,
    tmp_path: Path,
) -> None:
    """A 401 for every call is a configuration fault: no SMS is dead-lettered or retried,
    nothing is committed, readiness says why; the secret fixed upstream (its /control),
    the probe resumes consumption by itself and every SMS is stored once."""
    topic = await new_topic(partitions=2)
    sms_count = 300
    async with ReferenceUpstream(UpstreamBehaviour(), token="rotated") as upstream:
        settings = settings_for(
            stack, topic, mongo_db.name, unique_name("group"),
            processor="http", api_url=upstream.url, api_token="old-secret",
            halt_probe_interval_s=1.0,
        )
        await produce(settings.kafka_bootstrap, topic, [sms_value(n) for n in range(sms_count)])
        collection = mongo_db["messages"]
        process = StreamProcess(settings, tmp_path / "run.log")
        try:
            async with httpx.AsyncClient(base_url=process.metrics_url, timeout=5) as http:
                ready = await eventually(lambda: _halted_readiness(http), what="halted")
                assert ready["checks"]["not_halted"] is False
                assert "HTTP 401" in ready["halted"]
                await asyncio.sleep(2)  # several probe intervals: still nothing may move
                assert await _committed_total(settings.kafka_bootstrap, settings.group_id,
                                              topic) == 0
                for derived in (settings.dlq_topic, *settings.retry_topics):
                    assert await read_topic(settings.kafka_bootstrap, derived) == []
                assert await collection.count_documents({}) == 0

                async with httpx.AsyncClient(base_url=upstream.base_url) as control:
                    fixed = await control.post("/control", json={"token": "old-secret"})
                    fixed.raise_for_status()
                await eventually(lambda: _stored_at_least(collection, sms_count), within=60,
                                 what="every SMS stored after the fix")
                await eventually(lambda: _committed_is(settings, sms_count), what="lag 0")
        finally:
            assert await process.stop() == 0
    assert await _ledger(collection, settings, sms_count) == (sms_count, sms_count)
    assert await read_topic(settings.kafka_bootstrap, settings.dlq_topic) == []
    log = (tmp_path / "run.log").read_text()
    errors = [line for line in log.splitlines() if '"level":"ERROR"' in line.replace(" ", "")]
    assert len([e for e in errors if "halted" in e]) == 1, "one ERROR line for the halt"
    assert "STREAM_API_TOKEN" in errors[0]
    assert "old-secret" not in log


def _start_upstream(port: int, log: Path) -> subprocess.Popen[bytes]:
    """The reference upstream in a process of its own, so it can be killed with -9."""
    argv = [sys.executable, "-m", "stream", "upstream", "--port", str(port), "--latency", "0.02"]
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


async def _upstream_answers(port: int) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"http://127.0.0.1:{port}/stats")).status_code == 200
    except httpx.TransportError:
        return False


async def test_upstream_kill_9_and_restart_on_the_same_port_loses_nothing(
    stack: StackEndpoints, new_topic: Any, mongo_db: Any, unique_name: Any, tmp_path: Path,
) -> None:
    """The parse API dies mid-run with keep-alive connections open and comes back on its
    port: the client reconnects, the calls that failed meanwhile are retried (in process,
    then through the retry topics), and every SMS is stored once, none dead-lettered."""
    topic = await new_topic(partitions=3)
    port = free_port()
    upstream = _start_upstream(port, tmp_path / "upstream.log")
    try:
        await eventually(lambda: _upstream_answers(port), what="upstream up")
        settings = settings_for(
            stack, topic, mongo_db.name, unique_name("group"),
            processor="http", api_url=f"http://127.0.0.1:{port}/v1/parse",
            retry_delays_s=(2.0, 5.0, 10.0),
        )
        total = 3000
        await produce(settings.kafka_bootstrap, topic, [sms_value(n) for n in range(total)])
        collection = mongo_db["messages"]
        process = StreamProcess(settings, tmp_path / "run.log")
        try:
            await eventually(lambda: _stored_at_least(collection, 300), what="some SMS stored")
            upstream.kill()
            upstream.wait()
            upstream = _start_upstream(port, tmp_path / "upstream.log")
            await eventually(lambda: _upstream_answers(port), what="upstream back")
            await eventually(lambda: _stored_at_least(collection, total), within=120,
                             what="every SMS stored")
            await eventually(lambda: _committed_is(settings, total), within=60, what="lag 0")
        finally:
            assert await process.stop() == 0
    finally:
        upstream.kill()
        upstream.wait()
    assert await _ledger(collection, settings, total) == (total, total)
    assert await read_topic(settings.kafka_bootstrap, settings.dlq_topic) == []


async def _halted_readiness(http: Any) -> dict[str, Any] | None:
    try:
        response = await http.get("/readyz")
    except httpx.TransportError:
        return None
    body: dict[str, Any] = response.json()
    return body if response.status_code == 503 and "halted" in body else None
