"""`stream` as a user runs it: real subprocesses, asserting stdout, stderr and exit codes.

Ordinary failures print one line on stderr and no traceback; bad settings are all listed
at once with exit 2; `stream run --help` lists every setting of the table.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from support import eventually

from stream.config import SETTINGS
from stream.devkit.stack.process import free_port

# A command that fails fast still imports the package (~1 s on a busy 2-core machine);
# this bounds a hang, not the speed.
QUICK_S = 30.0
# Long enough for a first join on a fresh group (coordinator election included).
START_S = 60.0


def _env(**settings: str) -> dict[str, str]:
    """The test process's environment without its STREAM_* settings, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    return env | settings


def _stream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        env=_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=QUICK_S,
        check=False,
    )


def _closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program is listening on (all interfaces, like the metrics server)."""
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))  # noqa: S104 - must clash with the server's 0.0.0.0
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture
def silent_broker() -> Iterator[int]:
    """A port that accepts TCP connections and never answers: a hung Kafka."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_version() -> None:
    done = _stream("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"stream {version('stream')}\n", "")


def test_run_help_lists_every_setting_with_default_and_meaning() -> None:
    done = _stream("run", "--help")
    assert done.returncode == 0
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    for row in SETTINGS:
        at = lines.index(f"  {row.env} [{row.default}]")
        assert lines[at + 1].strip() == row.doc.replace("`", ""), row.env


def test_bad_settings_are_all_listed_on_stderr_with_exit_2() -> None:
    env = _env(
        STREAM_BATCH_MAX="lots",
        STREAM_RATE_MAX="fast",
        STREAM_LOG_LEVEL="loud",
        STREAM_BATCH_SIZE="10",
        STREAM_DRAIN_TIMEOUT_MS="40000",
    )
    done = _stream("run", env=env)
    assert done.returncode == 2
    assert done.stdout == ""
    first, *problems = done.stderr.splitlines()
    assert first.startswith("stream run: 5 configuration error(s)")
    named = sorted(line.split(":")[0].strip() for line in problems)
    assert named == sorted(
        [
            "STREAM_BATCH_MAX",
            "STREAM_RATE_MAX",
            "STREAM_LOG_LEVEL",
            "STREAM_BATCH_SIZE",
            "STREAM_DRAIN_TIMEOUT_MS",
        ]
    )
    assert "Traceback" not in done.stderr


def test_unreachable_kafka_is_one_line_without_traceback() -> None:
    port = _closed_port()
    env = _env(
        STREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}",
        STREAM_KAFKA_STARTUP_TIMEOUT_MS="0",
        STREAM_METRICS_PORT="0",
        # Accepted settings: the run gets as far as Kafka.
        STREAM_RATE_MAX="0.5",
        STREAM_LOG_LEVEL="info",
    )
    done = _stream("run", env=env)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"stream run: cannot reach Kafka at 127.0.0.1:{port} (")
    assert "Connect call failed" in line
    assert "check STREAM_KAFKA_BOOTSTRAP and STREAM_KAFKA_SECURITY_PROTOCOL (PLAINTEXT)" in line
    assert "Traceback" not in done.stdout + done.stderr
    events = [orjson.loads(text) for text in done.stdout.splitlines()]
    assert events[0]["event"] == "settings"
    assert events[0]["settings"]["rate_max"] == 0.5
    assert [e["event"] for e in events if e["level"] == "ERROR"] == [], "said once, on stderr"


async def test_second_signal_exits_at_once_without_draining(
    silent_broker: int, tmp_path: Path
) -> None:
    """A first SIGINT asks for a drain (here: a start hung on a broker that never answers);
    the second one exits at once."""
    log_path = tmp_path / "run.log"
    env = _env(STREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{silent_broker}", STREAM_METRICS_PORT="0")
    proc = await _start(env, log_path, stderr=asyncio.subprocess.PIPE)
    try:
        await _logged(log_path, '"settings"')
        proc.send_signal(signal.SIGINT)
        await _logged(log_path, "stopping: draining")
        assert proc.returncode is None, "still starting against the silent broker"
        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(proc.communicate(), QUICK_S)
    finally:
        await _reap(proc)
    assert proc.returncode == 128 + signal.SIGINT.value
    assert stderr.decode() == "stream run: SIGINT again: exiting now, without draining\n"


async def _start(env: dict[str, str], log_path: Path, stderr: int) -> asyncio.subprocess.Process:
    """`stream run` with stdout appended to `log_path`."""
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stream", "run", env=env, stdout=log, stderr=stderr
        )


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


async def _logged(path: Path, needle: str) -> None:
    async def found() -> bool:
        return needle in await asyncio.to_thread(path.read_text)

    await eventually(found, within=QUICK_S, what=f"{needle!r} in {path.name}")


async def test_metrics_port_in_use_fails_before_joining_the_group(
    stack: Any, kafka_admin: Any, new_topic: Any, unique_name: Any, held_port: int
) -> None:
    topic, group = await new_topic(partitions=1), unique_name("group")
    env = _env(
        STREAM_KAFKA_BOOTSTRAP=stack.kafka_bootstrap,
        STREAM_MONGO_URL=stack.mongo_url,
        STREAM_TOPIC=topic,
        STREAM_GROUP_ID=group,
        STREAM_METRICS_PORT=str(held_port),
    )
    done = await asyncio.to_thread(_stream, "run", env=env)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"stream run: metrics port {held_port} on 0.0.0.0 is already in use; "
        "set STREAM_METRICS_PORT to a free port (0 = any)"
    ]
    assert "Traceback" not in done.stdout
    groups = {entry[0] for entry in await kafka_admin.list_consumer_groups()}
    assert group not in groups, "the group was never joined"


async def test_missing_main_topic_is_an_error_unless_asked_to_create_it(
    stack: Any, kafka_admin: Any, unique_name: Any
) -> None:
    topic = unique_name("typo")
    env = _env(
        STREAM_KAFKA_BOOTSTRAP=stack.kafka_bootstrap,
        STREAM_MONGO_URL=stack.mongo_url,
        STREAM_TOPIC=topic,
        STREAM_GROUP_ID=unique_name("group"),
        STREAM_METRICS_PORT="0",
    )
    done = await asyncio.to_thread(_stream, "run", env=env)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"stream run: topic {topic!r} does not exist at {stack.kafka_bootstrap}; "
        "check STREAM_TOPIC, or set STREAM_CREATE_TOPIC=true to create it"
    ]
    assert topic not in await kafka_admin.list_topics()


async def test_healthy_start_logs_nothing_at_error(
    stack: Any, new_topic: Any, unique_name: Any, mongo_db: Any, tmp_path: Path
) -> None:
    """A fresh group on a fresh topic: the coordinator lookup fails once (retried by
    aiokafka) and must not show as an ERROR; settings are logged as an object."""
    port = free_port()
    env = _env(
        STREAM_KAFKA_BOOTSTRAP=stack.kafka_bootstrap,
        STREAM_MONGO_URL=stack.mongo_url,
        STREAM_MONGO_DB=mongo_db.name,
        STREAM_TOPIC=await new_topic(partitions=2),
        STREAM_GROUP_ID=unique_name("group"),
        STREAM_METRICS_PORT=str(port),
        STREAM_API_TOKEN="s3cret",
        STREAM_DRAIN_TIMEOUT_MS="2000",
    )
    log_path = tmp_path / "run.log"
    proc = await _start(env, log_path, stderr=asyncio.subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await eventually(lambda: _ready(http), within=START_S, what="readiness")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), START_S) == 0
    finally:
        await _reap(proc)
    text = log_path.read_text()
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert [line for line in lines if line["level"] == "ERROR"] == []
    (settings,) = [line["settings"] for line in lines if line["event"] == "settings"]
    assert settings["api_token"] == "***"
    assert "s3cret" not in text


async def _ready(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False
