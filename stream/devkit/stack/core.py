"""Bring the dev-stack up, down, and report on it; the state lives in the stack dir.

`<stack dir>/state.json` records, per service, its ports (reused on the next `up` when free,
so the env file stays stable) and the process we started. `<stack dir>/env` holds the
STREAM_* lines for the running stack. A lock file serialises concurrent callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.devkit.stack import kafka, mongo
from stream.devkit.stack.process import (
    Proc,
    default_cache_dir,
    file_lock,
    free_port,
    locked,
    port_accepts,
    port_is_free,
    stop,
    wait_ready,
)
from stream.errors import StackError

__all__ = [
    "KAFKA_ENV",
    "MONGO_ENV",
    "READY_TIMEOUT_S",
    "ServiceStatus",
    "StackEndpoints",
    "down",
    "ensure_up",
    "kill",
    "status",
]

# The settings the stack produces. When the operator already provides one, the stack uses
# that service instead of starting its own (e.g. a real MongoDB, or a shared broker).
KAFKA_ENV = "STREAM_KAFKA_BOOTSTRAP"
MONGO_ENV = "STREAM_MONGO_URL"
# A cold JVM on a busy CI machine takes ~10 s to answer; fetches and builds come before
# this clock starts.
READY_TIMEOUT_S = 90.0
# Kafka's controlled shutdown of one node takes 2-3 s; past this it is killed.
_STOP_GRACE_S = 30.0


@dataclass(frozen=True)
class StackEndpoints:
    """Where the stack's services answer; `started` tells whether this call started any."""

    kafka_bootstrap: str
    mongo_url: str
    started: bool

    def env_lines(self) -> str:
        return f"{KAFKA_ENV}={self.kafka_bootstrap}\n{MONGO_ENV}={self.mongo_url}\n"


@dataclass(frozen=True)
class _Service:
    """One service's record in state.json: `proc` is None once stopped."""

    kind: str
    ports: tuple[int, ...]
    endpoint: str
    proc: Proc | None

    def live(self) -> Proc | None:
        return self.proc if self.proc is not None and self.proc.running() else None


def _load(stack_dir: Path) -> dict[str, _Service]:
    try:
        raw: dict[str, Any] = json.loads((stack_dir / "state.json").read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StackError(f"{stack_dir / 'state.json'} is unreadable ({exc}); delete it") from exc
    return {
        name: _Service(
            kind=entry["kind"],
            ports=tuple(entry["ports"]),
            endpoint=entry["endpoint"],
            proc=None if entry["proc"] is None else Proc(**entry["proc"]),
        )
        for name, entry in raw.items()
    }


def _save(stack_dir: Path, services: Mapping[str, _Service]) -> None:
    """Write state.json atomically: a crash mid-write must not lose the pids to stop."""
    tmp = stack_dir / "state.json.tmp"
    tmp.write_text(json.dumps({name: dataclasses.asdict(s) for name, s in services.items()},
                              indent=2))
    tmp.replace(stack_dir / "state.json")


def _ports(previous: _Service | None, count: int, requested: int | None) -> tuple[int, ...]:
    """The previous run's ports when still free, else fresh ones; `requested` goes first."""
    if requested is not None and not port_is_free(requested):
        raise StackError(f"port {requested} is in use on 127.0.0.1; pick another --kafka-port")
    if previous is not None and len(previous.ports) == count:
        ports = list(previous.ports)
        if requested is not None:
            ports[0] = requested
        if all(port_is_free(port) for port in ports):
            return tuple(ports)
    fresh = [free_port() for _ in range(count)]
    if requested is not None:
        fresh[0] = requested
    return tuple(fresh)


def _start_missing(stack_dir: Path, cache_dir: Path, services: dict[str, _Service],
                   missing: list[str], kafka_port: int | None) -> None:
    """Fetch or build what the `missing` services need, then start them.

    Each start is recorded in `services` and state.json at once, so whatever happens next
    `down` can stop it. On a cold cache the Maven fetch overlaps the FerretDB build.
    """
    java = kafka.find_java() if "kafka" in missing else ""
    with ThreadPoolExecutor(max_workers=2) as pool:
        lib = pool.submit(kafka.install, cache_dir) if "kafka" in missing else None
        binary = pool.submit(mongo.find_binary, cache_dir) if "mongo" in missing else None
        lib_dir = None if lib is None else lib.result()
        mongo_binary = None if binary is None else binary.result()
    if lib_dir is not None:
        ports = _ports(services.get("kafka"), 2, kafka_port)
        proc = kafka.start(stack_dir / "kafka", java, lib_dir, ports[0], ports[1])
        services["kafka"] = _Service("kafka", ports, f"127.0.0.1:{ports[0]}", proc)
        _save(stack_dir, services)
    if mongo_binary is not None:
        ports = _ports(services.get("mongo"), 1, None)
        proc = mongo.start(mongo_binary, stack_dir / "mongo", ports[0])
        services["mongo"] = _Service(mongo_binary.kind, ports, mongo.url_for(ports[0]), proc)
        _save(stack_dir, services)


async def _ready(what: str, endpoint: str, probe: Callable[[str], Awaitable[bool]], *,
                 timeout_s: float, service: _Service | None = None, log: Path | None = None,
                 ) -> str:
    """Wait until `probe(endpoint)` answers; for our own `service`, a TCP connect first
    keeps the protocol client from logging a refused connection every poll."""

    async def answers() -> bool:
        if service is not None and not await port_accepts("127.0.0.1", service.ports[0]):
            return False
        return await probe(endpoint)

    await wait_ready(f"{what} at {endpoint}", answers, timeout_s=timeout_s,
                     proc=None if service is None else service.proc, log=log)
    return endpoint


async def ensure_up(
    stack_dir: Path,
    cache_dir: Path | None = None,
    *,
    kafka_port: int | None = None,
    timeout_s: float = READY_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> StackEndpoints:
    """Make the stack in `stack_dir` run and answer; start only what is not running.

    Called by `stream stack up`, the test session and the benchmarks. Services named in
    `env` (default: the process environment) by STREAM_KAFKA_BOOTSTRAP / STREAM_MONGO_URL
    are used as they are. Waits until Kafka answers a metadata request and Mongo a `ping`,
    then writes `<stack_dir>/env`. On failure, stops what this call started and raises
    StackError (with the failing service's log tail).
    """
    stack_dir = await asyncio.to_thread(stack_dir.resolve)
    cache = await asyncio.to_thread((cache_dir or default_cache_dir()).resolve)
    environ = os.environ if env is None else env
    external_kafka, external_mongo = environ.get(KAFKA_ENV), environ.get(MONGO_ENV)
    async with locked(stack_dir / ".lock"):
        services = await asyncio.to_thread(_load, stack_dir)
        missing = [
            name for name, external in (("kafka", external_kafka), ("mongo", external_mongo))
            if not external and (name not in services or services[name].live() is None)
        ]
        running_kafka = services.get("kafka")
        if ("kafka" not in missing and not external_kafka and kafka_port is not None
                and running_kafka is not None and running_kafka.ports[0] != kafka_port):
            raise StackError(f"Kafka of {stack_dir} already runs at {running_kafka.endpoint}; "
                             "`stream stack down` first to change its port")
        try:
            await asyncio.to_thread(_start_missing, stack_dir, cache, services, missing,
                                    kafka_port)
            # One after the other: both processes are already starting side by side.
            if external_kafka:
                bootstrap = await _ready("Kafka", external_kafka, kafka.answers,
                                         timeout_s=timeout_s)
            else:
                service = services["kafka"]
                bootstrap = await _ready("Kafka", service.endpoint, kafka.answers,
                                         timeout_s=timeout_s, service=service,
                                         log=stack_dir / "kafka" / "kafka.log")
            if external_mongo:
                url = await _ready("Mongo", external_mongo, mongo.answers, timeout_s=timeout_s)
            else:
                service = services["mongo"]
                url = await _ready(service.kind, service.endpoint, mongo.answers,
                                   timeout_s=timeout_s, service=service,
                                   log=stack_dir / "mongo" / "mongo.log")
        except BaseException:
            # A half-started stack would be mistaken for a running one by the next `up`.
            await asyncio.to_thread(_stop_services, stack_dir, services,
                                    [name for name in missing if name in services])
            raise
        endpoints = StackEndpoints(bootstrap, url, started=bool(missing))
        (stack_dir / "env").write_text(endpoints.env_lines())
        return endpoints


def _stop_services(stack_dir: Path, services: dict[str, _Service],
                   names: list[str]) -> list[str]:
    """Stop the named services (those whose process is still ours), record that, and
    return `name (pid N)` for each one signalled."""
    stopped = []
    for name in names:
        service = services[name]
        if service.proc is not None:
            if stop(service.proc, grace_s=_STOP_GRACE_S):
                stopped.append(f"{name} (pid {service.proc.pid})")
            services[name] = dataclasses.replace(service, proc=None)
    _save(stack_dir, services)
    return stopped


def down(stack_dir: Path) -> list[str]:
    """Stop every process this stack dir started; idempotent.

    Returns `name (pid N)` for each process signalled (SIGTERM, then SIGKILL after a grace
    period). Data dirs and ports are kept for the next `up`; the env file is removed.
    """
    stack_dir = stack_dir.resolve()
    if not (stack_dir / "state.json").exists():
        return []
    with file_lock(stack_dir / ".lock"):
        services = _load(stack_dir)
        stopped = _stop_services(stack_dir, services, list(services))
        with contextlib.suppress(FileNotFoundError):
            (stack_dir / "env").unlink()
    return stopped


def kill(stack_dir: Path, name: str) -> int:
    """SIGKILL one service of the stack, as a crash would: for fault-injection tests.

    The next `ensure_up` restarts it on its ports. Returns the pid killed; StackError when
    the service is not running.
    """
    stack_dir = stack_dir.resolve()
    with file_lock(stack_dir / ".lock"):
        service = _load(stack_dir).get(name)
        proc = None if service is None else service.live()
        if proc is None:
            raise StackError(f"{name} of {stack_dir} is not running")
        stop(proc, grace_s=0)
        return proc.pid


@dataclass(frozen=True)
class ServiceStatus:
    """One line of `stream stack status`."""

    name: str
    endpoint: str | None
    external: bool
    pid: int | None
    process: str | None  # what the pid runs, e.g. "java kafka.Kafka"; None when not running
    expected: bool  # whether the process is the expected program
    answers: bool

    @property
    def healthy(self) -> bool:
        return self.answers and (self.external or self.expected)

    def line(self) -> str:
        if self.external:
            where = f"external ({KAFKA_ENV if self.name == 'kafka' else MONGO_ENV})"
        elif self.process is not None:
            where = f"running pid {self.pid}: {self.process}"
        elif self.endpoint is None:
            where = "never started"
        else:
            where = "not running"
        probe = "metadata" if self.name == "kafka" else "ping"
        answer = f"answers {probe}" if self.answers else f"no answer to {probe}"
        return f"{self.name:<6} {where:<48} {answer:<22} {self.endpoint or '-'}"


async def status(stack_dir: Path, env: Mapping[str, str] | None = None) -> list[ServiceStatus]:
    """The state of each service of `stack_dir`: process, identity and whether it answers."""
    stack_dir = await asyncio.to_thread(stack_dir.resolve)
    environ = os.environ if env is None else env
    services = await asyncio.to_thread(_load, stack_dir)

    async def one(name: str, env_name: str) -> ServiceStatus:
        probe = kafka.answers if name == "kafka" else mongo.answers
        if environ.get(env_name):
            endpoint = environ[env_name]
            return ServiceStatus(name, endpoint, True, None, None, False, await probe(endpoint))
        service = services.get(name)
        if service is None:
            return ServiceStatus(name, None, False, None, None, False, False)
        argv = None if service.proc is None else service.proc.cmdline()
        if argv is None or service.proc is None:
            return ServiceStatus(name, service.endpoint, False, None, None, False, False)
        program = Path(argv[0]).name
        if name == "kafka":
            expected = program == "java" and kafka.MAIN_CLASS in argv
            process = f"{program} {kafka.MAIN_CLASS}" if expected else program
        else:
            expected, process = program == service.kind, program
        return ServiceStatus(name, service.endpoint, False, service.proc.pid, process, expected,
                             await probe(service.endpoint))

    return list(await asyncio.gather(one("kafka", KAFKA_ENV), one("mongo", MONGO_ENV)))
