"""Kafka through TLS and SASL, against a real broker that requires them.

One broker for the module (`stream stack up --secure` in a stack dir of its own, the
session's Mongo server) listens three ways: PLAINTEXT (the test's own checks), SASL_SSL
with SCRAM-SHA-512, and SSL requiring a client certificate (mutual TLS). `stream run`,
`stream produce` and `stream dlq` go through the secure listeners with the settings the
stack wrote; refusals must end start-up at once in one line naming the setting to check.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pipeline_support import committed
from support import eventually

from stream.adapters.kafka_security import ssl_context
from stream.config import Settings
from stream.devkit.stack import MONGO_ENV, StackEndpoints, down, ensure_up
from stream.devkit.stack.process import free_port
from stream.errors import ConfigError

SMS_COUNT = 200
# Bounds on a healthy run: producing and storing a few hundred SMS takes seconds.
RUN_DEADLINE_S = 60.0
# The start-up bound the refusal tests run with: a refusal must end long before it.
LONG_STARTUP_BOUND_MS = 60_000
# The start-up bound of the handshake test, which waits it out.
SHORT_STARTUP_BOUND_MS = 2_000


@dataclass(frozen=True)
class SecureKafka:
    """The module's secure broker: its plaintext endpoints and each listener's settings."""

    plain: StackEndpoints
    sasl_ssl: Mapping[str, str]
    mutual_tls: Mapping[str, str]


@pytest.fixture(scope="module")
async def secure_kafka(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory,
                       ) -> AsyncIterator[SecureKafka]:
    stack_dir = tmp_path_factory.mktemp("secure") / "stack"
    try:
        endpoints = await ensure_up(stack_dir, secure=True, env={MONGO_ENV: stack.mongo_url})
        yield SecureKafka(endpoints, endpoints.secure["SASL_SSL"], endpoints.secure["SSL"])
    finally:
        await asyncio.to_thread(down, stack_dir)


def _env(settings: Mapping[str, str], **more: str) -> dict[str, str]:
    """The test's environment without its STREAM_* settings, plus `settings` and `more`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    return env | dict(settings) | more


async def _stream(*args: str, env: Mapping[str, str], within: float = RUN_DEADLINE_S,
                  ) -> tuple[int, str, str, float]:
    """Run `stream <args>` to its end: (exit code, stdout, stderr, seconds taken)."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream", *args, env=dict(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(within):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode(), time.monotonic() - started


class _Member:
    """`stream run` in the background, all its output captured to one file."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.log = log
        self._env = dict(env)
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> _Member:
        with self.log.open("wb") as out:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "stream", "run", env=self._env,
                stdout=out, stderr=asyncio.subprocess.STDOUT,
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._process is not None
        if self._process.returncode is None:
            self._process.terminate()
        async with asyncio.timeout(RUN_DEADLINE_S):
            code = await self._process.wait()
        assert code == 0, self.log.read_text()[-3000:]


async def _lag_is_zero(bootstrap: str, group: str, topic: str, total: int) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sum((await committed(admin, group, topic)).values()) == total
    finally:
        await admin.close()


async def _end_to_end(secure_kafka: SecureKafka, listener: Mapping[str, str], mongo_db: Any,
                      unique_name: Any, tmp_path: Path, secret: str) -> None:
    """`stream produce` then `stream run` through `listener`: every SMS stored once, lag 0,
    and `secret` in no line of their output (at DEBUG, the clients' logs included)."""
    topic, group = unique_name("topic"), unique_name("group")
    env = _env(listener, STREAM_TOPIC=topic, STREAM_CREATE_TOPIC="true",
               STREAM_GROUP_ID=group, STREAM_MONGO_DB=mongo_db.name,
               STREAM_METRICS_PORT=str(free_port()), STREAM_LOG_LEVEL="DEBUG",
               STREAM_LOG_FORMAT="json")
    code, out, err, _ = await _stream("produce", "--count", str(SMS_COUNT), "--seed", "7",
                                      env=env)
    assert code == 0, err
    collection = mongo_db["messages"]
    async with _Member(env, tmp_path / "run.log") as member:
        stored = await eventually(lambda: _stored(collection, SMS_COUNT), within=RUN_DEADLINE_S,
                                  what="every SMS stored")
        await eventually(lambda: _lag_is_zero(secure_kafka.plain.kafka_bootstrap, group, topic,
                                              SMS_COUNT), what="lag 0")
    assert stored == SMS_COUNT
    assert len(await collection.distinct("_id")) == SMS_COUNT, "none stored twice"
    code, dlq_out, dlq_err, _ = await _stream("dlq", "list", env=env)
    assert code == 0, dlq_err
    assert "0 record(s) read" in dlq_out + dlq_err
    everything = out + err + member.log.read_text() + dlq_out + dlq_err
    assert '"level":"DEBUG"' in everything.replace(" ", ""), "the run logged at DEBUG"
    assert secret not in everything


async def _stored(collection: Any, n: int) -> int:
    count = int(await collection.count_documents({}))
    return count if count >= n else 0


async def test_stream_run_through_sasl_ssl_stores_every_sms_and_never_logs_the_password(
    secure_kafka: SecureKafka, mongo_db: Any, unique_name: Any, tmp_path: Path,
) -> None:
    await _end_to_end(secure_kafka, secure_kafka.sasl_ssl, mongo_db, unique_name, tmp_path,
                      secure_kafka.sasl_ssl["STREAM_KAFKA_SASL_PASSWORD"])


async def test_stream_run_with_a_client_certificate_through_mutual_tls(
    secure_kafka: SecureKafka, mongo_db: Any, unique_name: Any, tmp_path: Path,
) -> None:
    await _end_to_end(secure_kafka, secure_kafka.mutual_tls, mongo_db, unique_name, tmp_path,
                      secure_kafka.mutual_tls["STREAM_KAFKA_SSL_KEY_PASSWORD"])


REFUSALS = {
    "wrong SASL password": (
        "SASL_SSL", {"STREAM_KAFKA_SASL_PASSWORD": "not-the-password"},
        "STREAM_KAFKA_SASL_PASSWORD",
    ),
    "SASL mechanism not enabled": (
        "SASL_SSL", {"STREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"},
        "STREAM_KAFKA_SASL_MECHANISM",
    ),
    "broker certificate not trusted": (
        "SASL_SSL", {"STREAM_KAFKA_SSL_CAFILE": ""}, "STREAM_KAFKA_SSL_CAFILE",
    ),
    "no client certificate": (
        "SSL",
        {"STREAM_KAFKA_SSL_CERTFILE": "", "STREAM_KAFKA_SSL_KEYFILE": "",
         "STREAM_KAFKA_SSL_KEY_PASSWORD": ""},
        "STREAM_KAFKA_SSL_CERTFILE",
    ),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
async def test_a_refusal_ends_start_up_at_once_in_one_line_naming_the_setting(
    secure_kafka: SecureKafka, unique_name: Any, case: str,
) -> None:
    protocol, changes, setting = REFUSALS[case]
    listener = secure_kafka.sasl_ssl if protocol == "SASL_SSL" else secure_kafka.mutual_tls
    env = _env(listener, **changes, STREAM_TOPIC=unique_name("topic"),
               STREAM_CREATE_TOPIC="true", STREAM_METRICS_PORT="0",
               STREAM_KAFKA_STARTUP_TIMEOUT_MS=str(LONG_STARTUP_BOUND_MS))

    code, out, err, took = await _stream("run", env=env)

    assert code == 1
    (line,) = err.splitlines()
    assert line.startswith("stream run: "), line
    assert setting in line, line
    assert "Traceback" not in out + err
    assert took < LONG_STARTUP_BOUND_MS / 1000 / 2, "not retried until the start-up bound"
    assert "not-the-password" not in out + err


async def test_a_plaintext_client_on_the_tls_port_is_retried_until_the_start_up_bound(
    secure_kafka: SecureKafka, unique_name: Any,
) -> None:
    """The TLS listener never completes a Kafka handshake with a plaintext client, which
    looks like a broker that is down: retried, then one line naming both settings."""
    env = _env(secure_kafka.sasl_ssl, STREAM_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
               STREAM_TOPIC=unique_name("topic"), STREAM_METRICS_PORT="0",
               STREAM_KAFKA_STARTUP_TIMEOUT_MS=str(SHORT_STARTUP_BOUND_MS))

    code, out, err, took = await _stream("run", env=env)

    assert code == 1
    (line,) = err.splitlines()
    assert line.startswith(f"stream run: cannot reach Kafka at "
                           f"{secure_kafka.sasl_ssl['STREAM_KAFKA_BOOTSTRAP']}"), line
    assert "STREAM_KAFKA_BOOTSTRAP" in line
    assert "STREAM_KAFKA_SECURITY_PROTOCOL (SASL_PLAINTEXT)" in line
    assert took >= SHORT_STARTUP_BOUND_MS / 1000, "retried until the bound"
    assert "Traceback" not in out + err
    assert "Kafka does not answer yet; retrying" in out


def test_unusable_tls_files_stop_start_up_naming_their_setting(tmp_path: Path) -> None:
    """Checked before any connection: a missing CA file, a key that does not open."""
    missing = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "no.pem"))
    with pytest.raises(ConfigError) as no_ca:
        ssl_context(missing)
    assert no_ca.value.setting == "STREAM_KAFKA_SSL_CAFILE"

    (tmp_path / "cert.pem").write_text("not a certificate\n")
    broken = Settings(kafka_security_protocol="SSL", kafka_ssl_certfile=str(tmp_path / "cert.pem"),
                      kafka_ssl_key_password="secret-of-the-key")
    with pytest.raises(ConfigError) as bad_cert:
        ssl_context(broken)
    assert bad_cert.value.setting == "STREAM_KAFKA_SSL_CERTFILE"
    assert "secret-of-the-key" not in str(bad_cert.value)
