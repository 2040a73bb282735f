"""Bring the dev-stack up, down, and report on it; the state lives in the stack dir.

`<stack dir>/state.json` records, per service, its ports (reused on the next `up` when free,
so the env file stays stable and connected clients reconnect after a crash) and the process
we started. Kafka is the service `kafka` (one node, `<stack dir>/kafka`) or `kafka-1` ..
`kafka-3` (a cluster, `<stack dir>/kafka-<node.id>`); state.json holds one mode at a time.
`<stack dir>/env` holds the STREAM_* lines for the running stack. A lock file serialises
concurrent callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.devkit.stack import kafka, mongo, tls
from stream.devkit.stack.process import (
    Proc,
    default_cache_dir,
    file_lock,
    free_port,
    locked,
    log_tail,
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
    "kafka_service",
    "kill",
    "secure_env_file",
    "status",
]

logger = logging.getLogger(__name__)

# The settings the stack produces. When the operator already provides one, the stack uses
# that service instead of starting its own (e.g. a real MongoDB, or a shared broker).
KAFKA_ENV = "STREAM_KAFKA_BOOTSTRAP"
MONGO_ENV = "STREAM_MONGO_URL"
# A cold JVM on a busy CI machine takes ~10 s to answer; fetches and builds come before
# this clock starts.
READY_TIMEOUT_S = 90.0
# Kafka's controlled shutdown of one node takes 2-3 s; past this it is killed.
_STOP_GRACE_S = 30.0
# Ports of a Kafka node: listener and controller, then a secure stack's SASL_SSL and SSL.
_PLAIN_PORTS = 2
_SECURE_PORTS = 4
# Broker counts `up --brokers` offers: a quorum of two controllers cannot lose one, so the
# only cluster worth testing failover on is three.
BROKER_COUNTS = (1, 3)


def kafka_service(node_id: int, brokers: int) -> str:
    """The service name (and home dir) of Kafka node `node_id` of a `brokers`-node stack."""
    return "kafka" if brokers == 1 else f"kafka-{node_id}"


def _kafka_names(brokers: int) -> list[str]:
    return [kafka_service(node_id, brokers) for node_id in range(1, brokers + 1)]


def _is_kafka(name: str) -> bool:
    return name == "kafka" or name.startswith("kafka-")


@dataclass(frozen=True)
class StackEndpoints:
    """Where the stack's services answer; `started` tells whether this call started any.

    `secure` (a secure stack only) holds, by security protocol (`SASL_SSL`, and `SSL` with
    a client certificate), the STREAM_* settings of a client of that listener.
    """

    kafka_bootstrap: str
    mongo_url: str
    started: bool
    secure: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)

    def env_lines(self) -> str:
        return f"{KAFKA_ENV}={self.kafka_bootstrap}\n{MONGO_ENV}={self.mongo_url}\n"


def _secure_settings(nodes: Sequence[kafka.Node], certs: tls.Certificates, sasl_password: str,
                     mongo_url: str) -> dict[str, dict[str, str]]:
    """The client settings of each secure listener of `nodes`."""
    common = {MONGO_ENV: mongo_url, "STREAM_KAFKA_SSL_CAFILE": str(certs.ca_pem)}
    return {
        "SASL_SSL": {
            KAFKA_ENV: ",".join(f"127.0.0.1:{node.sasl_ssl_port}" for node in nodes),
            "STREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAM_KAFKA_SASL_MECHANISM": kafka.SASL_MECHANISM,
            "STREAM_KAFKA_SASL_USERNAME": kafka.SASL_USER,
            "STREAM_KAFKA_SASL_PASSWORD": sasl_password,
            **common,
        },
        "SSL": {
            KAFKA_ENV: ",".join(f"127.0.0.1:{node.ssl_port}" for node in nodes),
            "STREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
            "STREAM_KAFKA_SSL_CERTFILE": str(certs.client_pem),
            "STREAM_KAFKA_SSL_KEYFILE": str(certs.client_key),
            "STREAM_KAFKA_SSL_KEY_PASSWORD": certs.client_key_password,
            **common,
        },
    }


def secure_env_file(stack_dir: Path, protocol: str) -> Path:
    """Where `up --secure` writes the client settings of its `protocol` listener."""
    return stack_dir / f"env.{protocol.lower()}"


def _sasl_password(stack_dir: Path) -> str:
    """The stack's SCRAM password, made on first use (the log dirs are formatted with it)."""
    path = stack_dir / "sasl.secret"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(16))
    return path.read_text().strip()


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


def _ports(previous: _Service | None, count: int, requested: int | None,
           avoid: set[int]) -> tuple[int, ...]:
    """The previous run's ports when still free, else fresh ones not in `avoid`;
    `requested` goes first."""
    if requested is not None and not port_is_free(requested):
        raise StackError(f"port {requested} is in use on 127.0.0.1; pick another --kafka-port")
    if previous is not None and len(previous.ports) == count:
        ports = list(previous.ports)
        if requested is not None:
            ports[0] = requested
        if all(port_is_free(port) and port not in avoid for port in ports):
            return tuple(ports)
    fresh: list[int] = [] if requested is None else [requested]
    while len(fresh) < count:
        port = free_port()
        if port not in avoid and port not in fresh:
            fresh.append(port)
    return tuple(fresh)


def _plan_kafka(services: dict[str, _Service], names: list[str], missing: list[str],
                kafka_port: int | None, secure: bool) -> tuple[list[kafka.Node], list[str]]:
    """The nodes of the Kafka stack and which of them to start.

    A node restarted beside running ones keeps its ports: they are in the others' quorum
    configuration. Only when one of them is taken by another program does the whole
    cluster restart on new ports, every node's configuration rewritten to agree.
    """
    live = [name for name in names if name not in missing]
    if live and all(name in services and all(map(port_is_free, services[name].ports))
                    for name in missing):
        nodes = [kafka.Node(i, *services[name].ports) for i, name in enumerate(names, 1)]
        return nodes, missing
    if live:
        logger.warning("ports of Kafka %s are taken: restarting %s on new ports",
                       ", ".join(missing), ", ".join(live))
        _stop_services_unlocked(services, live)
    taken: set[int] = set()
    nodes = []
    for node_id, name in enumerate(names, 1):
        ports = _ports(services.get(name), _SECURE_PORTS if secure else _PLAIN_PORTS,
                       kafka_port if node_id == 1 else None, taken)
        taken.update(ports)
        nodes.append(kafka.Node(node_id, *ports))
    return nodes, names


def _start_missing(stack_dir: Path, cache_dir: Path, services: dict[str, _Service],
                   missing: list[str], kafka_names: list[str], kafka_port: int | None,
                   certs: tls.Certificates | None) -> list[str]:
    """Fetch or build what the `missing` services need, then start them; returns the names
    started (more than `missing` when a cluster had to restart on new ports).

    Each start is recorded in `services` and state.json at once, so whatever happens next
    `down` can stop it. On a cold cache the Maven fetch overlaps the FerretDB build.
    """
    missing_kafka = [name for name in missing if _is_kafka(name)]
    java = kafka.find_java() if missing_kafka else ""
    started: list[str] = []
    with ThreadPoolExecutor(max_workers=max(2, len(kafka_names))) as pool:
        lib = pool.submit(kafka.install, cache_dir) if missing_kafka else None
        binary = pool.submit(mongo.find_binary, cache_dir) if "mongo" in missing else None
        lib_dir = None if lib is None else lib.result()
        mongo_binary = None if binary is None else binary.result()
        if lib_dir is not None:
            nodes, to_start = _plan_kafka(services, kafka_names, missing_kafka, kafka_port,
                                          certs is not None)
            cluster = kafka.cluster_id([stack_dir / name for name in kafka_names])
            by_name = dict(zip(kafka_names, nodes, strict=True))
            password = _sasl_password(stack_dir)
            # The formats (a JVM start each) run side by side, then every node starts.
            procs = pool.map(
                lambda name: kafka.start(stack_dir / name, java, lib_dir, by_name[name], nodes,
                                         cluster, password, certs),
                to_start,
            )
            for name, proc in zip(to_start, procs, strict=True):
                node = by_name[name]
                services[name] = _Service("kafka", node.ports, f"127.0.0.1:{node.port}", proc)
                _save(stack_dir, services)
                started.append(name)
    if mongo_binary is not None:
        ports = _ports(services.get("mongo"), 1, None, set())
        proc = mongo.start(mongo_binary, stack_dir / "mongo", ports[0])
        services["mongo"] = _Service(mongo_binary.kind, ports, mongo.url_for(ports[0]), proc)
        _save(stack_dir, services)
        started.append("mongo")
    return started


async def _ready(what: str, endpoint: str, probe: Callable[[str], Awaitable[bool]], *,
                 timeout_s: float, stack_dir: Path | None = None,
                 own: Sequence[tuple[str, _Service]] = ()) -> str:
    """Wait until `probe(endpoint)` answers. For services of our `own` (name, service), a
    process that exits fails at once with its log, and a TCP connect to each comes first,
    which keeps the protocol client from logging a refused connection every poll."""

    def log_of(name: str) -> Path:
        assert stack_dir is not None  # own services live in the stack dir
        return stack_dir / name / ("mongo.log" if name == "mongo" else "kafka.log")

    async def answers() -> bool:
        for name, service in own:
            if service.proc is not None and not service.proc.running():
                log = log_of(name)
                raise StackError(f"{what} ({name}) exited during start-up; log {log}:\n"
                                 f"{log_tail(log)}")
            if not await port_accepts("127.0.0.1", service.ports[0]):
                return False
        return await probe(endpoint)

    await wait_ready(f"{what} at {endpoint}", answers, timeout_s=timeout_s,
                     log=log_of(own[0][0]) if own else None)
    return endpoint


async def ensure_up(
    stack_dir: Path,
    cache_dir: Path | None = None,
    *,
    kafka_port: int | None = None,
    brokers: int | None = None,
    timeout_s: float = READY_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    secure: bool | None = None,
) -> StackEndpoints:
    """Make the stack in `stack_dir` run and answer; start only what is not running.

    Called by `stream stack up`, the test session and the benchmarks. `brokers` (1 or 3;
    default: as the stack dir last ran, else 1) is the number of Kafka nodes. `secure`
    (default: as last time, else False) adds a SASL_SSL (SCRAM-SHA-512) and a mutual-TLS
    SSL listener to each node, whose client settings go to `env.sasl_ssl` / `env.ssl` in
    the stack dir and `StackEndpoints.secure`. Services named
    in `env` (default: the process environment) by STREAM_KAFKA_BOOTSTRAP / STREAM_MONGO_URL
    are used as they are, unless they are this stack's own (its env file exported), which
    are restarted like unnamed ones. Waits until every broker is listed in a metadata answer
    and Mongo answers `ping`, then writes `<stack_dir>/env`. On failure, stops what this
    call started and raises StackError (with the failing service's log tail).
    """
    if brokers is not None and brokers not in BROKER_COUNTS:
        raise StackError(f"--brokers must be one of {BROKER_COUNTS}, not {brokers}")
    stack_dir = await asyncio.to_thread(stack_dir.resolve)
    cache = await asyncio.to_thread((cache_dir or default_cache_dir()).resolve)
    environ = os.environ if env is None else env
    async with locked(stack_dir / ".lock"):
        services = await asyncio.to_thread(_load, stack_dir)
        external_kafka, external_mongo = _external(environ, services)
        if external_kafka and brokers not in (None, 1):
            raise StackError(f"{KAFKA_ENV} names a broker, so the stack starts none; unset it "
                             "for --brokers")
        if external_kafka and secure:
            raise StackError(f"{KAFKA_ENV} names a broker, so the stack starts none; unset it "
                             "for --secure")
        kafka_names = [] if external_kafka else _switch_mode(stack_dir, services, brokers)
        secure = _secure_mode(stack_dir, services, kafka_names, secure)
        certs = await asyncio.to_thread(tls.certificates, cache) if secure else None
        missing = [name for name in kafka_names
                   if name not in services or services[name].live() is None]
        if not external_mongo and ("mongo" not in services or services["mongo"].live() is None):
            missing.append("mongo")
        first = services.get(kafka_names[0]) if kafka_names else None
        if (kafka_names and kafka_names[0] not in missing and kafka_port is not None
                and first is not None and first.ports[0] != kafka_port):
            raise StackError(f"Kafka of {stack_dir} already runs at {first.endpoint}; "
                             "`stream stack down` first to change its port")
        started: list[str] = []
        try:
            started = await asyncio.to_thread(_start_missing, stack_dir, cache, services,
                                              missing, kafka_names, kafka_port, certs)
            # One after the other: all processes are already starting side by side.
            if external_kafka:
                bootstrap = await _ready("Kafka", external_kafka, kafka.answers,
                                         timeout_s=timeout_s)
            else:
                own = [(name, services[name]) for name in kafka_names]
                bootstrap = await _ready(
                    "Kafka", ",".join(service.endpoint for _, service in own),
                    lambda endpoint: kafka.answers(endpoint, len(own)),
                    timeout_s=timeout_s, stack_dir=stack_dir, own=own,
                )
            if external_mongo:
                url = await _ready("Mongo", external_mongo, mongo.answers, timeout_s=timeout_s)
            else:
                service = services["mongo"]
                url = await _ready(service.kind, service.endpoint, mongo.answers,
                                   timeout_s=timeout_s, stack_dir=stack_dir,
                                   own=[("mongo", service)])
        except BaseException:
            # A half-started stack would be mistaken for a running one by the next `up`.
            await asyncio.to_thread(_stop_services, stack_dir, services,
                                    [name for name in started if name in services])
            raise
        secure_settings: dict[str, dict[str, str]] = {}
        if certs is not None:
            nodes = [kafka.Node(i, *services[name].ports) for i, name in enumerate(kafka_names, 1)]
            secure_settings = _secure_settings(nodes, certs, _sasl_password(stack_dir), url)
        endpoints = StackEndpoints(bootstrap, url, started=bool(started), secure=secure_settings)
        (stack_dir / "env").write_text(endpoints.env_lines())
        for protocol, settings in secure_settings.items():
            path = secure_env_file(stack_dir, protocol)
            path.touch(mode=0o600)  # it holds a password
            path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        return endpoints


def _secure_mode(stack_dir: Path, services: Mapping[str, _Service], kafka_names: list[str],
                 secure: bool | None) -> bool:
    """Whether the Kafka nodes get TLS listeners (None: as recorded, else not); StackError
    when the other mode is still running."""
    recorded = [services[name] for name in kafka_names if name in services]
    was_secure = bool(recorded) and len(recorded[0].ports) == _SECURE_PORTS
    if secure is None:
        return was_secure
    if recorded and secure != was_secure and any(s.live() is not None for s in recorded):
        raise StackError(f"Kafka of {stack_dir} runs {'with' if was_secure else 'without'} "
                         "TLS listeners; `stream stack down` first to change --secure")
    return secure


def _external(environ: Mapping[str, str], services: Mapping[str, _Service],
              ) -> tuple[str | None, str | None]:
    """The Kafka bootstrap and Mongo URL that `environ` names for servers of another
    program's; None for a setting that is unset or names this stack dir's own service.

    A shell that exported `<stack dir>/env` (or a secure stack's `env.sasl_ssl` / `env.ssl`)
    to run `stream produce` or `stream run` names the stack's own services: `up` from that
    shell must restart them after a crash, not wait for them as if someone else ran them.
    """
    kafka_value, mongo_value = environ.get(KAFKA_ENV) or None, environ.get(MONGO_ENV) or None
    # A node's client listeners: PLAINTEXT, and a secure stack's SASL_SSL and SSL.
    own_kafka = {f"127.0.0.1:{port}" for name, service in services.items() if _is_kafka(name)
                 for port in (service.ports[0], *service.ports[_PLAIN_PORTS:])}
    if kafka_value is not None and set(kafka_value.split(",")) <= own_kafka:
        kafka_value = None
    own_mongo = services.get("mongo")
    if own_mongo is not None and mongo_value == own_mongo.endpoint:
        mongo_value = None
    return kafka_value, mongo_value


def _switch_mode(stack_dir: Path, services: dict[str, _Service], brokers: int | None,
                 ) -> list[str]:
    """The Kafka service names for `brokers` nodes (None: as recorded, else one), after
    dropping the other mode's records; StackError if the other mode is still running."""
    recorded = [name for name in services if _is_kafka(name)]
    if brokers is None:
        brokers = len(recorded) if "kafka" not in recorded and recorded else 1
    names = _kafka_names(brokers)
    if recorded and sorted(recorded) != sorted(names):
        if any(services[name].live() is not None for name in recorded):
            raise StackError(f"Kafka of {stack_dir} runs with {len(recorded)} broker(s); "
                             "`stream stack down` first to change --brokers")
        for name in recorded:  # their data dirs stay for a later switch back
            del services[name]
    return names


def _stop_services(stack_dir: Path, services: dict[str, _Service],
                   names: list[str]) -> list[str]:
    """Stop the named services (those whose process is still ours), record that, and
    return `name (pid N)` for each one signalled."""
    stopped = _stop_services_unlocked(services, names)
    _save(stack_dir, services)
    return stopped


def _stop_services_unlocked(services: dict[str, _Service], names: list[str]) -> list[str]:
    """`_stop_services` without saving; the Kafka nodes of a cluster stop side by side,
    since each waits for the others to take over its partitions."""
    procs = {name: proc for name in names if (proc := services[name].proc) is not None}
    with ThreadPoolExecutor(max_workers=max(1, len(procs))) as pool:
        signalled = list(pool.map(lambda proc: stop(proc, grace_s=_STOP_GRACE_S),
                                  procs.values()))
    for name in procs:
        services[name] = dataclasses.replace(services[name], proc=None)
    return [f"{name} (pid {proc.pid})"
            for (name, proc), was_signalled in zip(procs.items(), signalled, strict=True)
            if was_signalled]


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
        kafka_line = _is_kafka(self.name)
        if self.external:
            where = f"external ({KAFKA_ENV if kafka_line else MONGO_ENV})"
        elif self.process is not None:
            where = f"running pid {self.pid}: {self.process}"
        elif self.endpoint is None:
            where = "never started"
        else:
            where = "not running"
        probe = "metadata" if kafka_line else "ping"
        answer = f"answers {probe}" if self.answers else f"no answer to {probe}"
        return f"{self.name:<7} {where:<48} {answer:<22} {self.endpoint or '-'}"


async def status(stack_dir: Path, env: Mapping[str, str] | None = None) -> list[ServiceStatus]:
    """The state of each service of `stack_dir` (each Kafka node of a cluster on its own
    line): process, identity and whether it answers."""
    stack_dir = await asyncio.to_thread(stack_dir.resolve)
    environ = os.environ if env is None else env
    services = await asyncio.to_thread(_load, stack_dir)
    external_kafka, external_mongo = _external(environ, services)

    async def one(name: str, external: str | None) -> ServiceStatus:
        probe = kafka.answers if _is_kafka(name) else mongo.answers
        if external is not None:
            return ServiceStatus(name, external, True, None, None, False, await probe(external))
        service = services.get(name)
        if service is None:
            return ServiceStatus(name, None, False, None, None, False, False)
        argv = None if service.proc is None else service.proc.cmdline()
        if argv is None or service.proc is None:
            return ServiceStatus(name, service.endpoint, False, None, None, False, False)
        program = Path(argv[0]).name
        if _is_kafka(name):
            expected = program == "java" and kafka.MAIN_CLASS in argv
            process = f"{program} {kafka.MAIN_CLASS}" if expected else program
        else:
            expected, process = program == service.kind, program
        return ServiceStatus(name, service.endpoint, False, service.proc.pid, process, expected,
                             await probe(service.endpoint))

    recorded = [name for name in services if _is_kafka(name)]
    kafka_names = ["kafka"] if external_kafka or not recorded else recorded
    return list(await asyncio.gather(*(one(name, external_kafka) for name in kafka_names),
                                     one("mongo", external_mongo)))
