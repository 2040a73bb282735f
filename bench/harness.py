"""What every scenario shares: the local stack, fresh names, child processes, progress.

Everything measured runs as a child process (`stream run`, the baseline loop, the
reference upstream), so each pays the same interpreter start-up and none shares the
bench's event loop. The bench itself only produces, polls and scrapes. Every child is
registered in the `Context`, which kills whatever is still running on exit, deletes the
run's topics and drops its database, so a failed run leaves the shared stack clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import platform
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pymongo import AsyncMongoClient

from bench.figures import Metrics
from stream.adapters.topics import ensure_topics
from stream.config import Settings
from stream.devkit.stack import StackEndpoints
from stream.devkit.stack.process import free_port
from stream.devkit.upstream import PARSE_PATH
from stream.tools.produce import produce_records, synthetic_records

__all__ = [
    "BENCH_DIR",
    "BenchError",
    "Child",
    "Context",
    "StreamChild",
    "Timing",
    "UpstreamChild",
    "machine",
]

BENCH_DIR = Path(__file__).resolve().parent
N = TypeVar("N", int, float)

POLL_S = 0.05
"""Progress polling period: 50 ms is under 1 % of the shortest timed run, and costs the
broker one offset fetch per poll."""

STOP_TIMEOUT_S = 30.0
"""A SIGTERM'd child drains within STREAM_DRAIN_TIMEOUT_MS (15 s); past this it is killed."""

READY_TIMEOUT_S = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FALLBACK_RATE = 1000.0
"""Paced scenarios' SMS/s when neither --rate nor this run's pipeline figure is there."""
LOG_TAIL_CHARS = 2000


@dataclass(frozen=True)
class Timing:
    """How long a group took to commit `total` records, and when its first commit came."""

    total: int
    seconds: float
    startup: float
    at_first: int
    """Records committed by the first commit seen."""

    @property
    def rate(self) -> float:
        """Records per second from the start (spawn), nothing excluded."""
        return self.total / self.seconds

    @property
    def processing_rate(self) -> float:
        """Records per second after the first commit: start-up and group join excluded."""
        return (self.total - self.at_first) / max(self.seconds - self.startup, 1e-9)


class BenchError(Exception):
    """A scenario could not measure (a child died, a wait timed out, a count is wrong)."""


def machine() -> dict[str, str]:
    """What the figures were measured on, printed above them."""
    model = platform.processor() or "unknown"
    memory = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    return {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "memory": memory,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


class Child:
    """A process the bench started, with its output in a log file."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.label = label
        self.log_path = log_dir / f"{label}.log"
        self.started = time.monotonic()
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise BenchError with the log's tail if the process has exited."""
        if not self.running:
            raise BenchError(f"{self.label} exited with {self.proc.returncode}\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return f"--- {self.log_path} (tail) ---\n{text[-LOG_TAIL_CHARS:]}"

    def _status_mib(self, field: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise BenchError(f"{self.label}: no {field} in /proc/{self.proc.pid}/status")

    def peak_rss_mib(self) -> float:
        """VmHWM: the most resident memory the process has had; read while it runs."""
        return self._status_mib("VmHWM")

    def rss_mib(self) -> float:
        """VmRSS: resident memory now."""
        return self._status_mib("VmRSS")

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (/proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    async def stop(self, *, drain_may_time_out: bool = False) -> None:
        """SIGTERM and wait (SIGKILL after STOP_TIMEOUT_S); a non-zero exit is an error,
        but for exit 1 (the drain timed out) when the caller stops it mid-backlog on
        purpose, with calls that take longer than the drain bound."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"{self.label} did not stop on SIGTERM\n{self.log_tail()}") from None
        if code != 0 and not (drain_may_time_out and code == 1):
            raise BenchError(f"{self.label} exited with {code} on SIGTERM\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL (the recovery scenario's crash, and the last resort at exit)."""
        if self.running:
            self.proc.kill()
        self.proc.wait()


class StreamChild(Child):
    """`stream run` with its own metrics port, group and collection."""

    def __init__(
        self,
        label: str,
        env: dict[str, str],
        log_dir: Path,
        http: httpx.AsyncClient,
        *,
        argv: list[str] | None = None,
    ) -> None:
        self.port = int(env["STREAM_METRICS_PORT"])
        self.group = env["STREAM_GROUP_ID"]
        self.collection = env["STREAM_MONGO_COLLECTION"]
        self._http = http
        super().__init__(label, argv or [sys.executable, "-m", "stream", "run"], env, log_dir)

    async def metrics(self) -> Metrics:
        response = await self._http.get(f"http://127.0.0.1:{self.port}/metrics")
        response.raise_for_status()
        return Metrics.parse(response.text)

    async def wait_ready(self) -> float:
        """Wait for /readyz (group joined, MongoDB answers); return seconds since spawn."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                response = await self._http.get(f"http://127.0.0.1:{self.port}/readyz")
                if response.status_code == 200:
                    return time.monotonic() - self.started
            await asyncio.sleep(POLL_S)
        raise BenchError(f"{self.label} not ready after {READY_TIMEOUT_S:.0f}s\n{self.log_tail()}")


class UpstreamChild(Child):
    """`stream upstream` (the reference parse API) on a free port."""

    def __init__(
        self, label: str, flags: list[str], log_dir: Path, http: httpx.AsyncClient
    ) -> None:
        self.port = free_port()
        self._http = http
        argv = [sys.executable, "-m", "stream", "upstream", "--port", str(self.port)]
        argv += ["--log-level", "WARNING", *flags]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
        super().__init__(label, argv, env, log_dir)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + PARSE_PATH

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if (await self._http.get(self.base_url + "/stats")).status_code == 200:
                    return
            await asyncio.sleep(POLL_S)
        raise BenchError(f"{self.label} not answering\n{self.log_tail()}")

    async def stats(self) -> dict[str, Any]:
        response = await self._http.get(self.base_url + "/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    async def reset(self) -> None:
        """Zero the counters and the token bucket: t = 0 of the per-second history is now."""
        (await self._http.post(self.base_url + "/stats/reset")).raise_for_status()


class Context:
    """One bench run: the stack's endpoints, Kafka/Mongo/HTTP clients, names, children.

    `async with Context(...) as ctx:`; leaving it kills leftover children and removes every
    topic and the database this run created.
    """

    def __init__(
        self,
        endpoints: StackEndpoints,
        *,
        smoke: bool,
        repeats: int,
        rate: float | None,
        log_dir: Path,
    ) -> None:
        self.endpoints = endpoints
        self.smoke = smoke
        self.repeats = repeats
        self.rate = rate
        self.log_dir = log_dir
        self.run_id = uuid.uuid4().hex[:8]
        self.db = f"bench_{self.run_id}"
        self.children: list[Child] = []
        self.pipeline_rate: float | None = None
        """stream run's SMS/s from the pipeline scenario of this run, for paced scenarios."""
        self._seq = itertools.count(1)
        self.admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(endpoints.mongo_url)
        self.http = httpx.AsyncClient(timeout=10.0, trust_env=False)

    async def __aenter__(self) -> Self:
        await self.admin.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill_leftovers()
        try:
            prefix = f"bench-{self.run_id}-"
            ours = [t for t in await self.admin.list_topics() if t.startswith(prefix)]
            if ours:
                await self.admin.delete_topics(ours)
            await self.mongo.drop_database(self.db)
        finally:
            await self.admin.close()
            await self.mongo.close()
            await self.http.aclose()

    def kill_leftovers(self) -> None:
        """SIGKILL every child still running; safe to call twice."""
        for child in self.children:
            child.kill()

    def size(self, full: N, smoke: N) -> N:
        return smoke if self.smoke else full

    def name(self, label: str) -> str:
        """A topic/group/collection name no other run or repeat uses."""
        return f"bench-{self.run_id}-{label}-{next(self._seq)}"

    def settings(self, topic: str) -> Settings:
        return Settings(
            kafka_bootstrap=self.endpoints.kafka_bootstrap,
            mongo_url=self.endpoints.mongo_url,
            topic=topic,
            create_topic=True,
        )

    async def topic(self, label: str) -> str:
        """A fresh, empty 6-partition topic (with its retry and DLQ topics); its name."""
        topic = self.name(label)
        await ensure_topics(self.settings(topic))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:  # a producer racing the leader election logs NotLeaderForPartition
            (described,) = await self.admin.describe_topics([topic])
            partitions = described["partitions"]
            if partitions and all(p["leader"] >= 0 for p in partitions):
                return topic
            if time.monotonic() > deadline:
                raise BenchError(f"{topic}: partitions without a leader")
            await asyncio.sleep(POLL_S)

    async def produce(
        self, topic: str, count: int, *, seed: int = 1, rate: float | None = None
    ) -> None:
        """`count` synthetic SMS on `topic`, at full speed or paced at `rate` per second."""
        records = synthetic_records(random.Random(seed), count=count)
        acked = await produce_records(self.settings(topic), records, rate=rate)
        if acked != count:
            raise BenchError(f"{topic}: produced {acked} of {count}")

    async def backlog(self, label: str, count: int, *, seed: int = 1) -> str:
        """A fresh topic already holding `count` synthetic SMS; its name."""
        topic = await self.topic(label)
        await self.produce(topic, count, seed=seed)
        return topic

    def paced_rate(self) -> tuple[float, str]:
        """SMS/s for the paced scenarios, and where the figure comes from."""
        if self.rate:
            return self.rate, "--rate"
        if self.pipeline_rate:
            return self.pipeline_rate / 2, "half of this run's pipeline SMS/s"
        return FALLBACK_RATE, "fallback: no pipeline figure in this run and no --rate"

    def stream_env(self, topic: str, **overrides: str) -> dict[str, str]:
        """The environment of a `stream run` on `topic` with a fresh group and collection.

        `overrides` are STREAM_* settings; the result is validated by `Settings.from_env`,
        so a typo fails here, before anything is spawned.
        """
        name = self.name("group")
        settings = {
            "STREAM_KAFKA_BOOTSTRAP": self.endpoints.kafka_bootstrap,
            "STREAM_MONGO_URL": self.endpoints.mongo_url,
            "STREAM_TOPIC": topic,
            "STREAM_GROUP_ID": name,
            "STREAM_MONGO_DB": self.db,
            "STREAM_MONGO_COLLECTION": name,
            "STREAM_METRICS_PORT": str(free_port()),
        } | overrides
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")} | settings
        Settings.from_env(env)
        return env

    @staticmethod
    def another_member(env: dict[str, str]) -> dict[str, str]:
        """`env` with a metrics port of its own: one more member of the same group."""
        return env | {"STREAM_METRICS_PORT": str(free_port())}

    @property
    def cpus(self) -> int:
        return len(os.sched_getaffinity(0))

    def stream(self, label: str, env: dict[str, str]) -> StreamChild:
        child = StreamChild(self.name(label), env, self.log_dir, self.http)
        self.children.append(child)
        return child

    def spawn(self, label: str, argv: list[str], env: dict[str, str]) -> Child:
        child = Child(self.name(label), argv, env, self.log_dir)
        self.children.append(child)
        return child

    def spawn_stream_like(self, label: str, argv: list[str], env: dict[str, str]) -> StreamChild:
        """A child that reads the `stream run` environment and serves its /metrics."""
        child = StreamChild(self.name(label), env, self.log_dir, self.http, argv=argv)
        self.children.append(child)
        return child

    async def upstream(self, label: str, flags: list[str]) -> UpstreamChild:
        child = UpstreamChild(self.name(label), flags, self.log_dir, self.http)
        self.children.append(child)
        await child.wait_ready()
        return child

    async def partitions(self, topic: str) -> list[TopicPartition]:
        (described,) = await self.admin.describe_topics([topic])
        return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]

    async def committed(self, group: str, topic: str) -> int:
        """Sum over partitions of `group`'s committed offsets on `topic` (0 before any)."""
        try:
            offsets = await self.admin.list_consumer_group_offsets(group)
        except KafkaError:
            return 0  # the group's coordinator is still being set up
        return sum(max(0, meta.offset) for tp, meta in offsets.items() if tp.topic == topic)

    async def wait_committed(
        self,
        group: str,
        topic: str,
        total: int,
        *,
        since: float,
        children: Sequence[Child],
        limit_s: float,
    ) -> Timing:
        """Poll until `group` has committed `total` records of `topic` (timed from `since`).

        Raises BenchError if a child dies or `limit_s` passes.
        """
        first: tuple[float, int] | None = None
        while True:
            done = await self.committed(group, topic)
            now = time.monotonic()
            if done and first is None:
                first = (now - since, done)
            if done >= total:
                startup, at_first = first or (now - since, done)
                return Timing(total, now - since, startup, at_first)
            for child in children:
                child.check_alive()
            if now - since > limit_s:
                raise BenchError(f"{group}: {done} of {total} committed after {limit_s:.0f}s")
            await asyncio.sleep(POLL_S)

    async def kafka_timestamps(self, topic: str) -> dict[tuple[int, int], int]:
        """(partition, offset) -> record timestamp in ms, for every record of `topic`."""
        tps = await self.partitions(topic)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.endpoints.kafka_bootstrap, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            stamps: dict[tuple[int, int], int] = {}
            while len(stamps) < sum(end.values()):
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    stamps.update(((tp.partition, r.offset), r.timestamp) for r in records)
            return stamps
        finally:
            await consumer.stop()

    async def delays_ms(self, topic: str, collection: str) -> list[float]:
        """Per stored SMS: `processed_at` - the Kafka timestamp of its record, in ms.

        CreateTime is stamped by the producer at `send` (its linger included); processed_at
        by the pipeline once the batch is processed, just before the bulk write. Both ms.
        """
        stamps = await self.kafka_timestamps(topic)
        cursor = self.mongo[self.db][collection].find({}, {"processed_at": 1, "source": 1})
        return [
            doc["processed_at"].replace(tzinfo=UTC).timestamp() * 1000
            - stamps[(doc["source"]["partition"], doc["source"]["offset"])]
            async for doc in cursor
        ]

    async def expect_stored(self, collection: str, expected: int) -> None:
        """Raise BenchError unless the collection holds exactly `expected` documents.

        Counted by collStats: exact and O(1) on FerretDB/SQLite, where a count_documents
        scan takes ~0.5 ms per document.
        """
        stats = await self.mongo[self.db].command("collStats", collection)
        if stats["count"] != expected:
            raise BenchError(f"{collection}: {stats['count']} documents, expected {expected}")

    async def drop(self, collection: str) -> None:
        """Drop a repeat's collection at once: FerretDB/SQLite slows as the file grows."""
        await self.mongo[self.db].drop_collection(collection)

    async def mongo_server(self) -> str:
        info = await self.mongo.admin.command("buildinfo")
        if "ferretdbVersion" in info:
            return f"FerretDB (MongoDB wire {info['version']})"
        return f"MongoDB {info['version']}"
