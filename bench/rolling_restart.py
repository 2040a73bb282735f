"""A rolling restart of a 3-member group, dynamic members against static ones.

    .venv/bin/python -m bench.rolling_restart            # on the stack of .stack/env

Three `stream run` members share a 6-partition topic while SMS arrive at a steady rate;
each member is replaced in turn, as Kubernetes does it:
- `dynamic`: no group instance id, a Deployment's surge (the new pod starts and joins,
  then the old one stops): two rebalances per pod;
- `static`: STREAM_KAFKA_GROUP_INSTANCE_ID per member, a StatefulSet's order (the pod
  stops, then starts again under its name) within the session timeout;
- `static, kill -9`: one static member killed and not brought back: its partitions wait
  for the session timeout (the cost of sending no LeaveGroup).
Reported: revocations in the members that were not the one being replaced, the longest
time the group stored nothing, the longest time one partition stored nothing, and SMS
lost (produced minus stored).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient

from stream.devkit.stack.process import free_port

REPO = Path(__file__).resolve().parents[1]
PARTITIONS = 6
MEMBERS = 3
RATE = 100
"""SMS per second produced throughout."""


@dataclass
class Member:
    name: str
    log: Path
    proc: subprocess.Popen[bytes]

    def events(self, event: str) -> list[dict[str, Any]]:
        lines = [orjson.loads(line) for line in self.log.read_text().splitlines()
                 if line.startswith("{")]
        return [line for line in lines if line.get("event") == event]


@dataclass
class Run:
    mode: str
    env: dict[str, str]
    logs: Path
    members: dict[str, Member] = field(default_factory=dict)
    retired: list[Member] = field(default_factory=list)
    generation: int = 0

    def start(self, name: str, instance_id: str) -> Member:
        self.generation += 1
        log = self.logs / f"{self.mode}-{name}-{self.generation}.log"
        env = self.env | {"STREAM_METRICS_PORT": str(free_port())}
        if instance_id:
            env["STREAM_KAFKA_GROUP_INSTANCE_ID"] = instance_id
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "stream", "run"], env=env,
                                    stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        member = Member(name, log, proc)
        self.members[name] = member
        return member

    async def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        member = self.members.pop(name)
        member.proc.send_signal(sig)
        await asyncio.to_thread(member.proc.wait, 60)
        self.retired.append(member)


async def _until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"no {what} within {within} s")
        await asyncio.sleep(0.1)


async def _produce(bootstrap: str, topic: str, stop: asyncio.Event, sent: list[int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        n = 0
        started = time.monotonic()
        while not stop.is_set():
            value = {"id": f"sms-{n}", "sender": f"+2547{n:08d}", "body": f"message {n}",
                     "received_at": "2026-11-28T10:00:00Z"}
            await producer.send(topic, orjson.dumps(value), key=value["sender"].encode())
            n += 1
            sent[0] = n
            await asyncio.sleep(max(0.0, started + n / RATE - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()


def _longest_gaps(docs: list[dict[str, Any]], since: float, until: float) -> tuple[float, float]:
    """(longest gap in the group's stores, longest gap of one partition) within the window."""
    def gap(times: list[float]) -> float:
        points = sorted([since, *[t for t in times if since <= t <= until], until])
        return max(b - a for a, b in itertools.pairwise(points))

    stamps = [(d["processed_at"].timestamp(), d["source"]["partition"]) for d in docs]
    group = gap([t for t, _ in stamps])
    partition = max(gap([t for t, p in stamps if p == n]) for n in range(PARTITIONS))
    return group, partition


def _revocations(members: list[Member], replaced: set[str], since: float, until: float) -> int:
    count = 0
    for member in members:
        if member.name in replaced:
            continue
        for event in member.events("partitions revoked"):
            at = datetime.fromisoformat(event["ts"]).timestamp()
            count += since <= at <= until
    return count


async def scenario(mode: str, stack: dict[str, str], logs: Path, session_ms: int) -> dict[str, Any]:
    topic = f"rolling_{mode.replace(' ', '').replace(',', '_').replace('-', '')}_{os.getpid()}"
    bootstrap = stack["STREAM_KAFKA_BOOTSTRAP"]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")} | {
        "STREAM_KAFKA_BOOTSTRAP": bootstrap,
        "STREAM_MONGO_URL": stack["STREAM_MONGO_URL"],
        "STREAM_TOPIC": topic,
        "STREAM_GROUP_ID": f"{topic}-group",
        "STREAM_MONGO_DB": topic,
        "STREAM_LOG_FORMAT": "json",
        "STREAM_DRAIN_TIMEOUT_MS": "5000",
        "STREAM_SESSION_TIMEOUT_MS": str(session_ms),
        "STREAM_BATCH_WAIT_MS": "20",
    }
    static = mode.startswith("static")
    run = Run(mode, env, logs)
    names = [f"m{i}" for i in range(MEMBERS)]
    for name in names:
        run.start(name, name if static else "")
    await _until(lambda: all(m.events("partitions assigned") for m in run.members.values()),
                 90, "group formed")
    await asyncio.sleep(5)  # the joins' rebalances settle
    stop, sent = asyncio.Event(), [0]
    producing = asyncio.create_task(_produce(bootstrap, topic, stop, sent))
    await asyncio.sleep(3)
    since = time.time()
    revoked = 0
    for name in names if mode != "static, kill -9" else names[:1]:
        step = time.time()
        old = run.members[name]
        if mode == "dynamic":
            new = run.start(f"{name}'", "")
            await _until(lambda new=new: new.events("partitions assigned"), 90, "new member joined")
            await run.stop(name)
            run.members[name] = run.members.pop(f"{name}'")
        elif mode == "static":
            await run.stop(name)
            new = run.start(name, name)
            await _until(lambda new=new: new.events("partitions assigned"), 90, "member back")
        else:
            await run.stop(name, signal.SIGKILL)
            new = old
            await asyncio.sleep(session_ms / 1000 + 10)
        await asyncio.sleep(1)  # readiness, before the next pod
        revoked += _revocations([*run.members.values(), *run.retired], {old.name, new.name},
                                step, time.time())
    until = time.time()
    await asyncio.sleep(3)
    stop.set()
    await producing
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack["STREAM_MONGO_URL"])
    collection = client[topic]["messages"]
    async def stored() -> int:
        return int(await collection.count_documents({}))

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and await stored() < sent[0]:  # noqa: ASYNC110 - a server
        await asyncio.sleep(0.5)
    docs = await collection.find({}, {"processed_at": 1, "source.partition": 1}).to_list()
    group_gap, partition_gap = _longest_gaps(docs, since, until)
    for name in list(run.members):
        await run.stop(name)
    await client.drop_database(topic)
    await client.close()
    await admin.delete_topics([topic, *[t for t in await admin.list_topics()
                                        if t.startswith(f"{topic}.")]])
    await admin.close()
    return {
        "mode": mode,
        "session_s": session_ms / 1000,
        "revocations_in_others": revoked,
        "longest_group_stall_s": round(group_gap, 1),
        "longest_partition_stall_s": round(partition_gap, 1),
        "rollout_s": round(until - since, 1),
        "lost": sent[0] - len(docs),
    }


def _stack_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith("STREAM_")}
    path = REPO / ".stack" / "env"
    if "STREAM_KAFKA_BOOTSTRAP" not in env and path.exists():
        env |= dict(line.split("=", 1) for line in path.read_text().split())
    return env


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rolling_restart")
    parser.add_argument("--logs", type=Path, default=REPO / ".stack" / "rolling-restart")
    parser.add_argument("--kill-session-ms", type=int, default=15000,
                        help="session timeout of the kill -9 scenario")
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    stack = _stack_env()
    rows = [
        await scenario("dynamic", stack, args.logs, 10000),
        await scenario("static", stack, args.logs, 60000),
        await scenario("static, kill -9", stack, args.logs, args.kill_session_ms),
    ]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
