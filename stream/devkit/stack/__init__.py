"""Local dev-stack without Docker: an Apache Kafka broker and a MongoDB-wire server.

Kafka runs from Maven Central jars (KRaft: one node, or a 3-node cluster for failover
tests); Mongo is `mongod` when installed, else FerretDB built from
`stream/devkit/stack/ferretdb/`. Fetches and builds are cached in `$XDG_CACHE_HOME/stream`;
processes, data and logs live in the stack dir (`.stack/`).

    process   spawn, recognise (pid + start time + argv), stop; locks; readiness polling
    kafka     fetch jars, configure and format a node, start it; metadata probe
    mongo     find or build the server, start; ping probe; MongoServer for tests
    core      ensure_up / down / status over state.json
    cli       `stream stack up|down|status`
"""

from __future__ import annotations

from stream.devkit.stack.cli import main
from stream.devkit.stack.core import (
    KAFKA_ENV,
    MONGO_ENV,
    ServiceStatus,
    StackEndpoints,
    down,
    ensure_up,
    kafka_service,
    kill,
    status,
)
from stream.devkit.stack.mongo import MongoServer, unavailable_reason
from stream.devkit.stack.process import default_cache_dir, wait_ready

__all__ = [
    "KAFKA_ENV",
    "MONGO_ENV",
    "MongoServer",
    "ServiceStatus",
    "StackEndpoints",
    "default_cache_dir",
    "down",
    "ensure_up",
    "kafka_service",
    "kill",
    "main",
    "status",
    "unavailable_reason",
    "wait_ready",
]
