"""Settings, read once from the environment into a frozen, typed object.

Nothing else in the package reads `os.environ`: every knob is named, defaulted and
validated here, and a bad value stops start-up with a `ConfigError` naming the setting.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from stream.errors import ConfigError

__all__ = ["SETTINGS_DOC", "Settings", "parse_duration"]

Processor = Literal["builtin", "http"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# Every setting with its default and one line of meaning; the README, the ConfigMap and
# docker-compose are checked against this table by tests, so it is the single source.
SETTINGS_DOC: dict[str, tuple[str, str]] = {
    "STREAM_KAFKA_BOOTSTRAP": ("localhost:9092", "Kafka bootstrap servers, comma-separated"),
    "STREAM_TOPIC": ("sms.inbound", "main input topic; retry and DLQ topic names derive from it"),
    "STREAM_GROUP_ID": ("sms-processor", "consumer group id shared by all replicas"),
    "STREAM_MONGO_URL": ("mongodb://localhost:27017", "MongoDB URL (TLS options go here)"),
    "STREAM_MONGO_DB": ("sms", "MongoDB database"),
    "STREAM_MONGO_COLLECTION": ("messages", "MongoDB collection, one document per SMS id"),
    "STREAM_PROCESSOR": ("builtin", "`builtin` (local parser) or `http` (POST to the API)"),
    "STREAM_API_URL": ("", "parse API endpoint, required when STREAM_PROCESSOR=http"),
    "STREAM_API_TOKEN": ("", "secret sent as `Authorization: Bearer <token>`; never logged"),
    "STREAM_API_TIMEOUT_MS": ("10000", "read timeout of one API call"),
    "STREAM_BATCH_MAX": ("500", "max records per micro-batch"),
    "STREAM_BATCH_WAIT_MS": ("50", "max time to gather a micro-batch"),
    "STREAM_MAX_IN_FLIGHT": ("2000", "records fetched but not settled before fetching pauses"),
    "STREAM_RETRY_DELAYS": ("5s,30s,5m", "one retry topic per delay (ms, s, m, h units)"),
    "STREAM_DRAIN_TIMEOUT_MS": ("15000", "bound on draining in-flight work at shutdown/revoke"),
    "STREAM_MAX_SMS_BYTES": ("65536", "records with a larger value go to the DLQ"),
    "STREAM_LIMIT_MIN": ("1", "adaptive limiter: lowest concurrency"),
    "STREAM_LIMIT_MAX": ("256", "adaptive limiter: highest concurrency"),
    "STREAM_LIMIT_INITIAL": ("4", "adaptive limiter: starting concurrency"),
    "STREAM_RATE_MAX": ("0", "optional cap on API calls per second (0 = none)"),
    "STREAM_METRICS_PORT": ("9100", "port of /metrics, /healthz and /readyz (0 = any free)"),
    "STREAM_LOG_LEVEL": ("INFO", "DEBUG, INFO, WARNING or ERROR"),
    "STREAM_KAFKA_SECURITY_PROTOCOL": ("PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    "STREAM_KAFKA_SASL_MECHANISM": ("", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
    "STREAM_KAFKA_SASL_USERNAME": ("", "SASL user"),
    "STREAM_KAFKA_SASL_PASSWORD": ("", "SASL password (secret; never logged)"),
    "STREAM_KAFKA_SSL_CAFILE": ("", "CA bundle for Kafka TLS"),
}


def parse_duration(setting: str, text: str) -> float:
    """Parse `250ms`, `5s`, `5m`, `1h` into seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(setting, f"{text!r} is not a duration like 250ms, 5s, 5m or 1h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class _Reader:
    """Reads settings from one mapping, defaulting from SETTINGS_DOC."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str) -> str:
        return self._env.get(name, SETTINGS_DOC[name][0]).strip()

    def integer(self, name: str, low: int, high: int) -> int:
        raw = self.text(name)
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"{raw!r} is not an integer") from None
        if not low <= value <= high:
            raise ConfigError(name, f"{value} is outside {low}..{high}")
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        raw = self.text(name)
        if raw not in choices:
            raise ConfigError(name, f"{raw!r} is not one of {', '.join(choices)}")
        return raw


@dataclass(frozen=True)
class Settings:
    """All settings of one `stream` process; build with `Settings.from_env`."""

    kafka_bootstrap: str = "localhost:9092"
    topic: str = "sms.inbound"
    group_id: str = "sms-processor"
    mongo_url: str = "mongodb://localhost:27017"
    mongo_db: str = "sms"
    mongo_collection: str = "messages"
    processor: Processor = "builtin"
    api_url: str = ""
    api_token: str = field(default="", repr=False)
    api_timeout_s: float = 10.0
    batch_max: int = 500
    batch_wait_s: float = 0.05
    max_in_flight: int = 2000
    retry_delays_s: tuple[float, ...] = (5.0, 30.0, 300.0)
    drain_timeout_s: float = 15.0
    max_sms_bytes: int = 65536
    limit_min: int = 1
    limit_max: int = 256
    limit_initial: int = 4
    rate_max: float = 0.0
    metrics_port: int = 9100
    log_level: str = "INFO"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ssl_cafile: str = ""
    dlq_halt_ratio: float = 0.5
    dlq_halt_min: int = 200
    dlq_halt_window_s: float = 60.0
    halt_probe_interval_s: float = 10.0

    @property
    def retry_topics(self) -> tuple[str, ...]:
        """`<topic>.retry.1` .. `<topic>.retry.N`, one per delay."""
        return tuple(f"{self.topic}.retry.{n}" for n in range(1, len(self.retry_delays_s) + 1))

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    def replace(self, **changes: object) -> Settings:
        """A copy with some settings changed (tests and benchmarks)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Validate every STREAM_* setting; raise ConfigError naming the first bad one."""
        unknown = sorted(k for k in env if k.startswith("STREAM_") and k not in SETTINGS_DOC)
        if unknown:
            raise ConfigError(unknown[0], "unknown setting (a typo?); see the README's table")
        read = _Reader(env)
        processor = read.choice("STREAM_PROCESSOR", ("builtin", "http"))
        api_url = read.text("STREAM_API_URL")
        if processor == "http" and not re.match(r"^https?://", api_url):
            raise ConfigError(
                "STREAM_API_URL", "an http(s):// URL is required with the http processor"
            )
        delays_raw = read.text("STREAM_RETRY_DELAYS")
        delays = tuple(
            parse_duration("STREAM_RETRY_DELAYS", part) for part in delays_raw.split(",") if part
        )
        if not delays:
            raise ConfigError("STREAM_RETRY_DELAYS", "at least one delay is required")
        limit_min = read.integer("STREAM_LIMIT_MIN", 1, 10_000)
        limit_max = read.integer("STREAM_LIMIT_MAX", limit_min, 10_000)
        limit_initial = read.integer("STREAM_LIMIT_INITIAL", limit_min, limit_max)
        batch_max = read.integer("STREAM_BATCH_MAX", 1, 100_000)
        level = read.choice("STREAM_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"))
        security = read.choice(
            "STREAM_KAFKA_SECURITY_PROTOCOL", ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
        )
        mechanism = read.text("STREAM_KAFKA_SASL_MECHANISM")
        if security.startswith("SASL_"):
            mechanism = read.choice(
                "STREAM_KAFKA_SASL_MECHANISM", ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
            )
        for name in (
            "STREAM_KAFKA_BOOTSTRAP",
            "STREAM_TOPIC",
            "STREAM_GROUP_ID",
            "STREAM_MONGO_URL",
            "STREAM_MONGO_DB",
            "STREAM_MONGO_COLLECTION",
        ):
            if not read.text(name):
                raise ConfigError(name, "must not be empty")
        return cls(
            kafka_bootstrap=read.text("STREAM_KAFKA_BOOTSTRAP"),
            topic=read.text("STREAM_TOPIC"),
            group_id=read.text("STREAM_GROUP_ID"),
            mongo_url=read.text("STREAM_MONGO_URL"),
            mongo_db=read.text("STREAM_MONGO_DB"),
            mongo_collection=read.text("STREAM_MONGO_COLLECTION"),
            processor="http" if processor == "http" else "builtin",
            api_url=api_url,
            api_token=read.text("STREAM_API_TOKEN"),
            api_timeout_s=read.integer("STREAM_API_TIMEOUT_MS", 1, 600_000) / 1000,
            batch_max=batch_max,
            batch_wait_s=read.integer("STREAM_BATCH_WAIT_MS", 0, 60_000) / 1000,
            max_in_flight=read.integer("STREAM_MAX_IN_FLIGHT", batch_max, 10_000_000),
            retry_delays_s=delays,
            drain_timeout_s=read.integer("STREAM_DRAIN_TIMEOUT_MS", 0, 3_600_000) / 1000,
            max_sms_bytes=read.integer("STREAM_MAX_SMS_BYTES", 256, 16_777_216),
            limit_min=limit_min,
            limit_max=limit_max,
            limit_initial=limit_initial,
            rate_max=float(read.integer("STREAM_RATE_MAX", 0, 1_000_000)),
            metrics_port=read.integer("STREAM_METRICS_PORT", 0, 65535),
            log_level=level,
            kafka_security_protocol=security,
            kafka_sasl_mechanism=mechanism,
            kafka_sasl_username=read.text("STREAM_KAFKA_SASL_USERNAME"),
            kafka_sasl_password=read.text("STREAM_KAFKA_SASL_PASSWORD"),
            kafka_ssl_cafile=read.text("STREAM_KAFKA_SSL_CAFILE"),
        )

    def masked(self) -> dict[str, str]:
        """Every setting with secrets masked, for the start-up log (secrets are `repr=False`)."""
        return {
            f.name: ("***" if not f.repr and getattr(self, f.name) else str(getattr(self, f.name)))
            for f in dataclasses.fields(self)
        }
