"""Settings: one table, read once from the environment into a frozen, typed object.

Each field of `Settings` carries its `Setting` (environment name, default as text, one line
of meaning, parser) in its dataclass metadata. Everything else derives from that table:
the dataclass defaults (the parser applied to the default text), `Settings.from_env`,
`stream run --help` (`help_text`), the README's table (`markdown_table`, compared by
tests/test_docs.py) and `SETTINGS_DOC` (which the deploy-file tests read).

Nothing else in the package reads `os.environ`. `from_env` parses every setting, then
checks the ones that constrain each other, and reports every problem at once in one
`InvalidSettings` (a `ConfigError` whose `errors` each name their setting).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from stream.errors import ConfigError, InvalidSettings

__all__ = [
    "SETTINGS",
    "SETTINGS_DOC",
    "Setting",
    "Settings",
    "help_text",
    "markdown_table",
    "parse_duration",
]

Processor = Literal["builtin", "http"]
LogFormat = Literal["auto", "json", "text"]
T = TypeVar("T")

PROCESSORS: tuple[Processor, ...] = ("builtin", "http")
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "text")
BATCH_MODES = ("adaptive", "fixed")
HttpBackend = Literal["own", "httpx"]
HTTP_BACKENDS: tuple[HttpBackend, ...] = ("own", "httpx")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
ISOLATION_LEVELS = ("read_committed", "read_uncommitted")

TOPIC_NAME_MAX = 249
"""Kafka refuses longer topic names; checked on the derived retry and DLQ names too."""
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_SETTING = "setting"
"""Key of a `Settings` field's metadata that holds its `Setting`."""


@dataclass(frozen=True)
class Setting:
    """One row of the table: how a `Settings` field is named, defaulted, read and documented.

    `parse` takes the stripped text and returns the value, or raises `ValueError` whose
    message `from_env` reports under `env`.
    """

    env: str
    default: str
    doc: str
    parse: Callable[[str], Any]
    secret: bool = False
    field: str = ""


def _setting(
    env: str, default: str, doc: str, parse: Callable[[str], T], *, secret: bool = False
) -> T:
    """A `Settings` field whose default is `parse(default)`: the text is written once."""
    row = Setting(env, default, doc, parse, secret)
    value: T = field(default=parse(default), repr=not secret, metadata={_SETTING: row})
    return value


def parse_duration(setting: str, text: str) -> float:
    """Parse `250ms`, `5s`, `5m`, `1h` into seconds; raise ConfigError naming `setting`."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(setting, f"{text!r} is not a duration like 250ms, 5s, 5m or 1h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


# Parsers: each returns a function of the setting's text that raises ValueError on refusal.


def _text(*, required: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if required and not text:
            raise ValueError("must not be empty")
        return text

    return parse


def _header_value(text: str) -> str:
    """A value sent in an HTTP header: printable ASCII, or a request could be split."""
    if not all(" " <= char <= "~" for char in text):
        raise ValueError("must be printable ASCII (it is sent in an HTTP header)")
    return text


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

    return parse


def _number(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # also refuses nan
            raise ValueError(f"{value:g} is outside {low:g}..{high:g}")
        return value

    return parse


def _millis(low_ms: int, high_ms: int) -> Callable[[str], float]:
    """Whole milliseconds in the environment, seconds in `Settings`."""
    as_int = _integer(low_ms, high_ms)
    return lambda text: as_int(text) / 1000


def _duration(low_s: float, high_s: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = parse_duration("", text)
        except ConfigError:
            raise ValueError(f"{text!r} is not a duration like 250ms, 5s, 5m or 1h") from None
        if not low_s <= value <= high_s:
            raise ValueError(f"{text} is outside {low_s:g}s..{high_s:g}s")
        return value

    return parse


def _durations(text: str) -> tuple[float, ...]:
    delays = tuple(_duration(0.001, 86_400)(part) for part in text.split(",") if part.strip())
    if not delays:
        raise ValueError("at least one delay is required")
    return delays


def _choice(options: tuple[T, ...]) -> Callable[[str], T]:
    """One of `options`, case-insensitive; returns the option as the table spells it."""

    def parse(text: str) -> T:
        for option in options:
            if str(option).casefold() == text.casefold():
                return option
        raise ValueError(f"{text!r} is not one of {', '.join(map(str, options))}")

    return parse


def _optional(parse: Callable[[str], T], empty: T) -> Callable[[str], T]:
    return lambda text: empty if not text else parse(text)


def _boolean(text: str) -> bool:
    if text.casefold() in _TRUE:
        return True
    if text.casefold() in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (true or false)")


def _pem_file(text: str) -> str:
    if not os.path.isfile(text):
        raise ValueError(f"{text!r} is not a readable file")
    return text


def _topic(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    if not _TOPIC_NAME.match(text) or text in (".", ".."):
        raise ValueError(f"{text!r} is not a Kafka topic name (letters, digits, '.', '_', '-')")
    return text


def _http_url(text: str) -> str:
    if not re.match(r"^https?://\S+$", text):
        raise ValueError(f"{text!r} is not an http(s):// URL")
    return text


@dataclass(frozen=True)
class Settings:
    """All settings of one `stream` process; build with `Settings.from_env`."""

    kafka_bootstrap: str = _setting(
        "STREAM_KAFKA_BOOTSTRAP",
        "localhost:9092",
        "Kafka bootstrap servers, comma-separated",
        _text(required=True),
    )
    topic: str = _setting(
        "STREAM_TOPIC",
        "sms.inbound",
        "main input topic; retry and DLQ topic names derive from it",
        _topic,
    )
    create_topic: bool = _setting(
        "STREAM_CREATE_TOPIC",
        "false",
        "create a missing main topic; when false a missing one is an error (a typo)",
        _boolean,
    )
    group_id: str = _setting(
        "STREAM_GROUP_ID",
        "sms-processor",
        "consumer group id shared by all replicas",
        _text(required=True),
    )
    mongo_url: str = _setting(
        "STREAM_MONGO_URL",
        "mongodb://localhost:27017",
        "MongoDB URL (TLS options go here)",
        _text(required=True),
    )
    mongo_db: str = _setting("STREAM_MONGO_DB", "sms", "MongoDB database", _text(required=True))
    mongo_collection: str = _setting(
        "STREAM_MONGO_COLLECTION",
        "messages",
        "MongoDB collection, one document per SMS id",
        _text(required=True),
    )
    processor: Processor = _setting(  # noqa: RUF009 - a Field, built once, like field()
        "STREAM_PROCESSOR",
        "builtin",
        "`builtin` (local parser) or `http` (POST to the API)",
        _choice(PROCESSORS),
    )
    api_url: str = _setting(
        "STREAM_API_URL",
        "",
        "parse API endpoint, required when STREAM_PROCESSOR=http",
        _optional(_http_url, ""),
    )
    api_token: str = _setting(
        "STREAM_API_TOKEN",
        "",
        "secret sent as `Authorization: Bearer <token>`; never logged",
        _header_value,
        secret=True,
    )
    api_timeout_s: float = _setting(
        "STREAM_API_TIMEOUT_MS",
        "10000",
        "deadline of one API call: connecting, sending and the whole answer",
        _millis(1, 600_000),
    )
    http_client: HttpBackend = _setting(  # noqa: RUF009 - a Field, built once, like field()
        "STREAM_HTTP_CLIENT",
        "own",
        "`own` (h11-based, least CPU per call) or `httpx` (honours `HTTPS_PROXY`/`NO_PROXY`, "
        "client certificates)",
        _choice(HTTP_BACKENDS),
    )
    api_client_cert: str = _setting(
        "STREAM_API_CLIENT_CERT",
        "",
        "PEM file of the TLS client certificate (and its key, unless STREAM_API_CLIENT_KEY "
        "names one); needs STREAM_HTTP_CLIENT=httpx",
        _optional(_pem_file, ""),
    )
    api_client_key: str = _setting(
        "STREAM_API_CLIENT_KEY",
        "",
        "PEM file of the TLS client certificate's private key",
        _optional(_pem_file, ""),
    )
    batch_max: int = _setting(
        "STREAM_BATCH_MAX", "500", "max records per micro-batch", _integer(1, 100_000)
    )
    batch_wait_s: float = _setting(
        "STREAM_BATCH_WAIT_MS", "50", "max time to gather a micro-batch", _millis(0, 60_000)
    )
    batch_mode: str = _setting(
        "STREAM_BATCH_MODE",
        "adaptive",
        "`adaptive`: a batch goes at once while nothing is in flight and gathers while "
        "writes are under way; `fixed`: it always gathers up to the max or the wait",
        _choice(BATCH_MODES),
    )
    max_in_flight: int = _setting(
        "STREAM_MAX_IN_FLIGHT",
        "2000",
        "records fetched but not settled before fetching pauses (at least STREAM_BATCH_MAX)",
        _integer(1, 10_000_000),
    )
    retry_delays_s: tuple[float, ...] = _setting(
        "STREAM_RETRY_DELAYS",
        "5s,30s,5m",
        "one retry topic per delay (ms, s, m, h units)",
        _durations,
    )
    dlq_halt_ratio: float = _setting(
        "STREAM_DLQ_HALT_RATIO",
        "0.5",
        "halt consumption when more than this share of the window's records is "
        "dead-lettered (0..1; 1 never halts)",
        _number(0.0, 1.0),
    )
    dlq_halt_min: int = _setting(
        "STREAM_DLQ_HALT_MIN",
        "200",
        "dead-lettered records the window must hold before the DLQ breaker may halt",
        _integer(1, 10_000_000),
    )
    dlq_halt_window_s: float = _setting(
        "STREAM_DLQ_HALT_WINDOW",
        "60s",
        "sliding window of the DLQ breaker",
        _duration(1.0, 86_400),
    )
    halt_probe_interval_s: float = _setting(
        "STREAM_HALT_PROBE_INTERVAL",
        "10s",
        "while halted, time between probes of the upstream (resumes when one succeeds)",
        _duration(0.1, 3_600),
    )
    mongo_halt_after_s: float = _setting(
        "STREAM_MONGO_HALT_AFTER",
        "60s",
        "halt consumption when MongoDB has refused every write this long with an error "
        "that is the server's, not a document's (probes resume it)",
        _duration(1.0, 86_400),
    )
    drain_timeout_s: float = _setting(
        "STREAM_DRAIN_TIMEOUT_MS",
        "15000",
        "bound on draining in-flight work at shutdown/revoke; below STREAM_REBALANCE_TIMEOUT_MS",
        _millis(0, 3_600_000),
    )
    session_timeout_s: float = _setting(
        "STREAM_SESSION_TIMEOUT_MS",
        "10000",
        "group session: a member silent this long is removed (broker allows 6000..1800000)",
        _millis(6_000, 1_800_000),
    )
    rebalance_timeout_s: float = _setting(
        "STREAM_REBALANCE_TIMEOUT_MS",
        "30000",
        "time members get to drain, commit and rejoin during a rebalance",
        _millis(1_000, 3_600_000),
    )
    metadata_refresh_s: float = _setting(
        "STREAM_METADATA_REFRESH",
        "30s",
        "how often topics are re-read: added partitions and retry levels are consumed, and "
        "missing retry/DLQ topics recreated, within this",
        _duration(1.0, 300.0),
    )
    kafka_isolation_level: str = _setting(
        "STREAM_KAFKA_ISOLATION_LEVEL",
        "read_committed",
        "`read_committed`: records of aborted or still-open transactions are never read; "
        "`read_uncommitted`: every record is, aborted ones included",
        _choice(ISOLATION_LEVELS),
    )
    kafka_compression: str = _setting(
        "STREAM_KAFKA_COMPRESSION",
        "zstd",
        "codec of the records we produce (retry/DLQ copies, `stream produce`): "
        "none, gzip, snappy, lz4 or zstd; every codec is read whatever this is",
        _choice(COMPRESSIONS),
    )
    max_sms_bytes: int = _setting(
        "STREAM_MAX_SMS_BYTES",
        "65536",
        "records with a larger value go to the DLQ",
        _integer(256, 16_777_216),
    )
    limit_min: int = _setting(
        "STREAM_LIMIT_MIN", "1", "adaptive limiter: lowest concurrency", _integer(1, 10_000)
    )
    limit_max: int = _setting(
        "STREAM_LIMIT_MAX", "256", "adaptive limiter: highest concurrency", _integer(1, 10_000)
    )
    limit_initial: int = _setting(
        "STREAM_LIMIT_INITIAL", "4", "adaptive limiter: starting concurrency", _integer(1, 10_000)
    )
    rate_max: float = _setting(
        "STREAM_RATE_MAX",
        "0",
        "optional cap on API calls per second, e.g. 0.5 (0 = none)",
        _number(0.0, 1_000_000.0),
    )
    metrics_port: int = _setting(
        "STREAM_METRICS_PORT",
        "9100",
        "port of /metrics, /healthz and /readyz (0 = any free)",
        _integer(0, 65535),
    )
    log_level: str = _setting(
        "STREAM_LOG_LEVEL",
        "INFO",
        "DEBUG, INFO, WARNING or ERROR (any case)",
        _choice(LOG_LEVELS),
    )
    log_format: str = _setting(
        "STREAM_LOG_FORMAT",
        "auto",
        "`json` (one object a line), `text` (for people) or `auto` (text on a terminal)",
        _choice(LOG_FORMATS),
    )
    kafka_security_protocol: str = _setting(
        "STREAM_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
        _choice(SECURITY_PROTOCOLS),
    )
    kafka_sasl_mechanism: str = _setting(
        "STREAM_KAFKA_SASL_MECHANISM",
        "",
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (required with SASL_*)",
        _optional(_choice(SASL_MECHANISMS), ""),
    )
    kafka_sasl_username: str = _setting("STREAM_KAFKA_SASL_USERNAME", "", "SASL user", _text())
    kafka_sasl_password: str = _setting(
        "STREAM_KAFKA_SASL_PASSWORD",
        "",
        "SASL password (secret; never logged)",
        _text(),
        secret=True,
    )
    kafka_ssl_cafile: str = _setting(
        "STREAM_KAFKA_SSL_CAFILE", "", "CA bundle for Kafka TLS", _text()
    )
    kafka_ssl_certfile: str = _setting(
        "STREAM_KAFKA_SSL_CERTFILE",
        "",
        "client certificate (PEM, chain included) for brokers that require mutual TLS",
        _text(),
    )
    kafka_ssl_keyfile: str = _setting(
        "STREAM_KAFKA_SSL_KEYFILE",
        "",
        "private key (PEM) of the client certificate, unless it is in the certificate file",
        _text(),
    )
    kafka_ssl_key_password: str = _setting(
        "STREAM_KAFKA_SSL_KEY_PASSWORD",
        "",
        "password of an encrypted client key, read with STREAM_KAFKA_SSL_CERTFILE only "
        "(secret; never logged)",
        _text(),
        secret=True,
    )
    kafka_startup_timeout_s: float = _setting(
        "STREAM_KAFKA_STARTUP_TIMEOUT_MS",
        "60000",
        "how long start-up retries brokers that do not answer or complete no handshake "
        "(0 = try once); refused credentials or certificates stop at once",
        _millis(0, 3_600_000),
    )
    kafka_group_instance_id: str = _setting(
        "STREAM_KAFKA_GROUP_INSTANCE_ID",
        "",
        "static group membership id (Kafka's group.instance.id), unique per member; empty: dynamic",
        _text(),
    )
    status_interval_s: float = _setting(
        "STREAM_STATUS_INTERVAL",
        "5s",
        "how often a member publishes its state to `<topic>.status` (for `stream status`)",
        _duration(0.1, 300),
    )

    @property
    def retry_topics(self) -> tuple[str, ...]:
        """`<topic>.retry.1` .. `<topic>.retry.N`, one per delay."""
        return tuple(f"{self.topic}.retry.{n}" for n in range(1, len(self.retry_delays_s) + 1))

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    def retry_level(self, topic: str) -> int:
        """The level `topic` is on this topic's retry ladder (`<topic>.retry.<n>` -> n),
        whether or not STREAM_RETRY_DELAYS configures it; 0 for any other topic."""
        prefix = f"{self.topic}.retry."
        level = topic.removeprefix(prefix)
        if topic == level or not level.isdigit() or not level.isascii() or level[0] == "0":
            return 0
        return int(level)

    def replace(self, **changes: object) -> Settings:
        """A copy with some settings changed (tests and benchmarks)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Parse every STREAM_* setting of `env` (others default).

        Raises `InvalidSettings` listing every bad setting: unknown `STREAM_*` names
        (typos), values a parser refuses, and settings that contradict each other.
        """
        known = {row.env for row in SETTINGS}
        errors = [
            ConfigError(name, "unknown setting (a typo?); see `stream run --help`")
            for name in sorted(env)
            if name.startswith("STREAM_") and name not in known
        ]
        values: dict[str, Any] = {}
        for row in SETTINGS:
            if row.env not in env:
                continue
            try:
                values[row.field] = row.parse(env[row.env].strip())
            except ValueError as exc:
                errors.append(ConfigError(row.env, str(exc)))
        settings = cls(**values)
        bad = {error.setting for error in errors}
        errors += [
            error
            for involved, error in settings._contradictions()
            if not bad.intersection(involved)
        ]
        if errors:
            raise InvalidSettings(errors)
        return settings

    def _contradictions(self) -> list[tuple[tuple[str, ...], ConfigError]]:
        """Settings valid alone but not together: (the settings involved, the error).

        Each error names the setting to change; `from_env` drops those involving a setting
        it already refused, whose value here is only the default.
        """
        found: list[tuple[tuple[str, ...], ConfigError]] = []

        def check(ok: bool, involved: tuple[str, ...], message: str) -> None:
            if not ok:
                found.append((involved, ConfigError(involved[0], message)))

        check(
            self.limit_min <= self.limit_max,
            ("STREAM_LIMIT_MAX", "STREAM_LIMIT_MIN"),
            f"{self.limit_max} is below STREAM_LIMIT_MIN ({self.limit_min})",
        )
        check(
            self.limit_min > self.limit_max  # reported above; no range to be inside yet
            or self.limit_min <= self.limit_initial <= self.limit_max,
            ("STREAM_LIMIT_INITIAL", "STREAM_LIMIT_MIN", "STREAM_LIMIT_MAX"),
            f"{self.limit_initial} is outside STREAM_LIMIT_MIN..STREAM_LIMIT_MAX "
            f"({self.limit_min}..{self.limit_max})",
        )
        check(
            self.max_in_flight >= self.batch_max,
            ("STREAM_MAX_IN_FLIGHT", "STREAM_BATCH_MAX"),
            f"{self.max_in_flight} is below STREAM_BATCH_MAX ({self.batch_max})",
        )
        check(
            self.processor != "http" or bool(self.api_url),
            ("STREAM_API_URL", "STREAM_PROCESSOR"),
            "an http(s):// URL is required with the http processor",
        )
        check(
            not self.api_client_cert or self.http_client == "httpx",
            ("STREAM_API_CLIENT_CERT", "STREAM_HTTP_CLIENT"),
            "client certificates need STREAM_HTTP_CLIENT=httpx",
        )
        check(
            not self.api_client_key or bool(self.api_client_cert),
            ("STREAM_API_CLIENT_KEY", "STREAM_API_CLIENT_CERT"),
            "a key without STREAM_API_CLIENT_CERT",
        )
        check(
            not self.kafka_security_protocol.startswith("SASL_") or bool(self.kafka_sasl_mechanism),
            ("STREAM_KAFKA_SASL_MECHANISM", "STREAM_KAFKA_SECURITY_PROTOCOL"),
            f"required with {self.kafka_security_protocol}: one of {', '.join(SASL_MECHANISMS)}",
        )
        check(
            not self.kafka_ssl_certfile or self.kafka_security_protocol.endswith("SSL"),
            ("STREAM_KAFKA_SSL_CERTFILE", "STREAM_KAFKA_SECURITY_PROTOCOL"),
            f"a client certificate needs SSL or SASL_SSL, not {self.kafka_security_protocol}",
        )
        check(
            bool(self.kafka_ssl_certfile) or not self.kafka_ssl_keyfile,
            ("STREAM_KAFKA_SSL_CERTFILE", "STREAM_KAFKA_SSL_KEYFILE"),
            "required with STREAM_KAFKA_SSL_KEYFILE: the certificate that key belongs to",
        )
        check(
            self.drain_timeout_s < self.rebalance_timeout_s,
            ("STREAM_DRAIN_TIMEOUT_MS", "STREAM_REBALANCE_TIMEOUT_MS"),
            f"{self.drain_timeout_s * 1000:.0f} must be below STREAM_REBALANCE_TIMEOUT_MS "
            f"({self.rebalance_timeout_s * 1000:.0f}): a revoked partition is drained and "
            "committed within the rebalance",
        )
        check(
            not self.kafka_group_instance_id
            or (
                len(self.kafka_group_instance_id) <= TOPIC_NAME_MAX
                and bool(_TOPIC_NAME.match(self.kafka_group_instance_id))
            ),
            ("STREAM_KAFKA_GROUP_INSTANCE_ID",),
            f"{self.kafka_group_instance_id[:40]!r} is not a Kafka group.instance.id "
            f"(letters, digits, '.', '_', '-'; at most {TOPIC_NAME_MAX})",
        )
        longest = max((*self.retry_topics, self.dlq_topic), key=len)
        check(
            len(longest) <= TOPIC_NAME_MAX,
            ("STREAM_TOPIC", "STREAM_RETRY_DELAYS"),
            f"too long: the derived topic {longest[:20]}... exceeds {TOPIC_NAME_MAX} characters",
        )
        return found

    def masked(self) -> dict[str, object]:
        """Every setting by field name, secrets as `***` when set: the start-up log's object."""
        return {
            row.field: "***" if row.secret and value else value
            for row in SETTINGS
            for value in (getattr(self, row.field),)
        }


SETTINGS: tuple[Setting, ...] = tuple(
    dataclasses.replace(f.metadata[_SETTING], field=f.name) for f in dataclasses.fields(Settings)
)
"""The table, in the order of `Settings`' fields."""

SETTINGS_DOC: dict[str, tuple[str, str]] = {row.env: (row.default, row.doc) for row in SETTINGS}
"""Environment name -> (default text, meaning): a view of `SETTINGS` for the deploy files."""


def markdown_table() -> str:
    """The README's configuration table (tests/test_docs.py checks the README holds it)."""
    lines = ["| Setting | Default | Meaning |", "|---|---|---|"]
    for row in SETTINGS:
        default = f"`{row.default}`" if row.default else "(empty)"
        lines.append(f"| `{row.env}` | {default} | {row.doc} |")
    return "\n".join(lines)


def help_text() -> str:
    """The settings part of `stream run --help`: name, default and meaning of each."""
    lines = ["settings (environment variables, default in brackets):"]
    for row in SETTINGS:
        lines.append(f"  {row.env} [{row.default}]")
        lines.append(f"      {row.doc.replace('`', '')}")
    return "\n".join(lines)
