"""Apache Kafka (KRaft, combined broker+controller nodes) run from Maven Central jars.

One node for everyday work, or three (`stream stack up --brokers 3`: one static quorum, one
cluster id, replication 3 and min ISR 2) to test failover on one machine.

The release tarball lives on downloads.apache.org, which CI machines may not reach; the
broker artifact's runtime dependencies on Maven Central are the same classpath, short of the
SLF4J binding, which is added at the log4j version Maven resolves.
"""

from __future__ import annotations

import base64
import logging
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from stream.devkit.stack.process import Proc, file_lock, run_tool, spawn
from stream.devkit.stack.tls import Certificates
from stream.errors import StackError

__all__ = [
    "KAFKA_VERSION",
    "MAIN_CLASS",
    "SASL_MECHANISM",
    "SASL_USER",
    "Node",
    "answers",
    "cluster_id",
    "find_java",
    "install",
    "start",
]

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
MAIN_CLASS = "kafka.Kafka"
# Pinned rather than whatever the local Maven's super-POM binds, so the fetch is reproducible.
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# Ample for tests and benchmarks on one node; the broker's default (1 GiB) wastes CI memory.
_HEAP = "-Xmx512m"
# Three nodes must share a small CI machine; 384 MiB each still holds a test's traffic.
_CLUSTER_HEAP = "-Xmx384m"
# Replicas of every partition in a cluster, and how many must have a write before it is
# acknowledged: one node may die without losing an acknowledged record or stopping writes.
_CLUSTER_REPLICATION = 3
_CLUSTER_MIN_ISR = 2
# A killed node is fenced, and its partitions get new leaders, once its heartbeats have been
# missing this long; Kafka's 9 s would stall a failover test (and a restart after kill -9:
# the new process may register only once the old one is fenced) for as long.
_SESSION_TIMEOUT_MS = 6000
_HEARTBEAT_MS = 1500
# Written beside a log dir formatted with the stack's SCRAM user.
_SCRAM_MARKER = "scram-user"
# One metadata round trip; a broker that is up answers in milliseconds.
_PROBE_TIMEOUT_MS = 3000

_POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Throw-away project of `stream stack`: its runtime dependencies are the broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.stream</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """\
# Written by `stream stack`: the broker logs warnings and errors only.
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = OUT
"""


def install(cache_dir: Path) -> Path:
    """The broker's lib dir under `cache_dir`, fetched with Maven on first use only.

    A `complete` marker is written last, so an interrupted fetch is redone, not trusted.
    Raises StackError when `mvn` is missing or the fetch fails.
    """
    home = cache_dir / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}"
    lib, marker = home / "lib", home / "complete"
    if marker.exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "mvn not found: the first `stack up` fetches Kafka from Maven Central; install "
            "Maven 3 (e.g. `apt-get install maven`) or set STREAM_KAFKA_BOOTSTRAP to a broker"
        )
    with file_lock(cache_dir / "kafka.lock"):
        if marker.exists():  # another process fetched it while we waited
            return lib
        logger.info("fetching Kafka %s jars with Maven into %s (first run only)",
                    KAFKA_VERSION, lib)
        home.mkdir(parents=True, exist_ok=True)
        (home / "pom.xml").write_text(_POM)
        staging = home / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(lib, ignore_errors=True)
        maven = [mvn, "-B", "-q", "-Dstyle.color=never"]
        run_tool(
            [*maven, f"{_DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={staging}"],
            cwd=home, what=f"fetching Kafka {KAFKA_VERSION} with Maven",
        )
        binding = f"org.apache.logging.log4j:log4j-slf4j-impl:{_log4j_version(staging)}"
        run_tool(
            [*maven, f"{_DEPENDENCY_PLUGIN}:copy", f"-Dartifact={binding}",
             f"-DoutputDirectory={staging}"],
            cwd=home, what="fetching the SLF4J binding with Maven",
        )
        staging.rename(lib)
        marker.write_text("".join(f"{jar.name}\n" for jar in sorted(lib.glob("*.jar"))))
    return lib


def _log4j_version(lib: Path) -> str:
    cores = sorted(lib.glob("log4j-core-*.jar"))
    if len(cores) != 1:
        raise StackError(f"expected one log4j-core jar in {lib}, found {len(cores)}")
    return cores[0].name.removeprefix("log4j-core-").removesuffix(".jar")


def find_java() -> str:
    """The `java` to run the broker with; StackError naming what to install if missing."""
    java = shutil.which("java")
    if java is None:
        raise StackError(
            "java not found: the local Kafka broker needs a Java 17+ runtime "
            "(e.g. `apt-get install openjdk-17-jre-headless`) or set STREAM_KAFKA_BOOTSTRAP"
        )
    return java


@dataclass(frozen=True)
class Node:
    """One combined broker+controller: its `node.id`, listener port and controller port,
    and in a secure stack its SASL_SSL and (mutual TLS) SSL listener ports."""

    node_id: int
    port: int
    controller_port: int
    sasl_ssl_port: int = 0
    ssl_port: int = 0

    @property
    def secure(self) -> bool:
        return self.sasl_ssl_port != 0

    @property
    def ports(self) -> tuple[int, ...]:
        """The ports recorded for the node, in the order `Node(node_id, *ports)` takes them."""
        secure = (self.sasl_ssl_port, self.ssl_port) if self.secure else ()
        return (self.port, self.controller_port, *secure)


# The SCRAM user of every stack, created when a node's log dir is formatted.
SASL_USER = "stream"
SASL_MECHANISM = "SCRAM-SHA-512"


def _secure_properties(node: Node, certs: Certificates) -> str:
    """Listeners that require TLS: SASL_SSL with SCRAM, and SSL with a client certificate.
    PLAINTEXT stays the inter-broker listener and the readiness probe's."""
    return f"""\
listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port},\
SASL_SSL://127.0.0.1:{node.sasl_ssl_port},SSL://127.0.0.1:{node.ssl_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{node.port},\
SASL_SSL://127.0.0.1:{node.sasl_ssl_port},SSL://127.0.0.1:{node.ssl_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,\
SSL:SSL
sasl.enabled.mechanisms={SASL_MECHANISM}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location={certs.keystore}
ssl.keystore.password={certs.keystore_password}
ssl.truststore.type=PEM
ssl.truststore.location={certs.ca_pem}
listener.name.ssl.ssl.client.auth=required
"""


def _server_properties(data: Path, node: Node, voters: Sequence[Node],
                       certs: Certificates | None) -> str:
    replication = _CLUSTER_REPLICATION if len(voters) >= _CLUSTER_REPLICATION else 1
    min_isr = _CLUSTER_MIN_ISR if replication == _CLUSTER_REPLICATION else 1
    quorum = ",".join(f"{v.node_id}@127.0.0.1:{v.controller_port}" for v in voters)
    # Later keys win in a .properties file: the secure listeners replace the plain ones.
    secure = "" if certs is None else _secure_properties(node, certs)
    return f"""\
# Written by `stream stack` on every start: node {node.node_id} of {len(voters)}, both broker
# and controller (static quorum).
process.roles=broker,controller
node.id={node.node_id}
controller.quorum.voters={quorum}
listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
# As many replicas as the cluster allows (one node: one replica).
offsets.topic.replication.factor={replication}
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_isr}
default.replication.factor={replication}
min.insync.replicas={min_isr}
broker.session.timeout.ms={_SESSION_TIMEOUT_MS}
broker.heartbeat.interval.ms={_HEARTBEAT_MS}
# Internal topics are created on first use (the first group join); 50 partitions each
# would make that first join of a test run take seconds.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.num.partitions=1
# Tests join groups constantly; the default 3 s delay would be added to every first join.
group.initial.rebalance.delay.ms=0
num.partitions=1
auto.create.topics.enable=true
# Small segments and indexes: many short-lived test topics start fast and stay small.
log.segment.bytes=16777216
log.index.size.max.bytes=1048576
num.network.threads=2
num.io.threads=4
{secure}"""


def _cluster_id() -> str:
    """A Kafka cluster id (base64url of 16 random bytes, as `StorageTool random-uuid`
    prints, which costs a JVM start); Kafka rejects ids starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def cluster_id(homes: Sequence[Path]) -> str:
    """The cluster id the nodes in `homes` were formatted with, or a new one if none was.

    A node's log dir formatted for another cluster would never join the quorum: StackError
    naming the dirs, rather than a broker that does not answer.
    """
    found = {home: _formatted_id(home / "data") for home in homes}
    ids = {value for value in found.values() if value is not None}
    if len(ids) > 1:
        raise StackError("Kafka log dirs of different clusters: "
                         + ", ".join(f"{home} ({value})" for home, value in found.items())
                         + "; `stream stack down` and delete them to start afresh")
    return ids.pop() if ids else _cluster_id()


def _formatted_id(data: Path) -> str | None:
    try:
        lines = (data / "meta.properties").read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    raise StackError(f"{data / 'meta.properties'} has no cluster.id; delete {data}")


def start(home: Path, java: str, lib: Path, node: Node, voters: Sequence[Node],
          cluster: str, sasl_password: str, certs: Certificates | None) -> Proc:
    """Configure `node` in `home` (formatting its log dir for `cluster` once) and start it.

    The configuration is rewritten on every start, so a node whose ports changed and the
    quorum it belongs to agree again. The format creates the SCRAM user with
    `sasl_password` (users can only be given at format time without a running admin
    client); `certs` switches the TLS listeners on. Returns once the JVM runs; readiness is
    the caller's `answers` loop. Raises StackError when the format fails.
    """
    data, props, log4j = home / "data", home / "server.properties", home / "log4j2.properties"
    data.mkdir(parents=True, exist_ok=True)
    props.touch(mode=0o600)  # it holds the keystore password
    props.write_text(_server_properties(data, node, voters, certs))
    log4j.write_text(_LOG4J2)
    heap = _HEAP if len(voters) == 1 else _CLUSTER_HEAP
    jvm = [java, heap, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*"]
    if _formatted_id(data) is None:
        user = f"{SASL_MECHANISM}=[name={SASL_USER},password={sasl_password}]"
        run_tool(
            [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(props), "-g",
             "-S", user],
            cwd=home, what="formatting the Kafka log dir",
        )
        (home / _SCRAM_MARKER).write_text("")
    elif certs is not None and not (home / _SCRAM_MARKER).exists():
        raise StackError(f"{data} was formatted without the SCRAM user a secure stack needs; "
                         f"`stream stack down`, delete {data} and start again")
    return spawn([*jvm, MAIN_CLASS, str(props)], log=home / "kafka.log", needle=str(props),
                 cwd=home)


async def answers(bootstrap: str, brokers: int = 1) -> bool:
    """Whether the cluster at `bootstrap` answers a metadata request listing at least
    `brokers` brokers (a node is listed once it has registered and caught up)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=_PROBE_TIMEOUT_MS)
    try:
        await admin.start()
        described = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return len(described["brokers"]) >= brokers
