"""How every Kafka client authenticates and encrypts, and what a failed first contact means.

`security_options` turns the STREAM_KAFKA_SECURITY_PROTOCOL / SASL / SSL settings into
aiokafka's keyword arguments (one TLS context, client certificate included). `start`
starts a client the way start-up needs it: a broker that refuses our credentials or our
certificate, or presents one we do not trust, is a configuration fault that ends start-up
at once with one line naming the setting to check; a broker that does not answer, or a
port that never completes a handshake (a plaintext client on a TLS port looks exactly like
a broker that is down), is retried until STREAM_KAFKA_STARTUP_TIMEOUT_MS.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from stream.config import Settings
from stream.errors import ConfigError, KafkaRefused, KafkaUnavailable

__all__ = ["security_options", "ssl_context", "start"]

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = 0.5
RETRY_BACKOFF_MAX_S = 5.0
"""Waits between start-up attempts double from the first to the second: a broker that is
restarting is found within seconds, one that is down is not hammered."""

TLS_PROBE_TIMEOUT_S = 2.0
"""A broker answers a TLS handshake in milliseconds; this bounds one that never does."""

_SASL_REFUSALS = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)
# OpenSSL's reasons for a broker rejecting our client certificate (TLS alerts it sent).
_CLIENT_CERT_REJECTED = frozenset({
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "TLSV1_ALERT_DECRYPT_ERROR",
})


class _Startable(Protocol):
    async def start(self) -> None: ...


def security_options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for the configured security protocol."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password,
        }
    if protocol.endswith("SSL"):
        options["ssl_context"] = ssl_context(settings)
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A verifying TLS context: the CA file (else the system's CAs) and, for mutual TLS,
    the client certificate. A file that cannot be used is a ConfigError naming its setting,
    raised before any connection is tried."""
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=settings.kafka_ssl_cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("STREAM_KAFKA_SSL_CAFILE",
                          f"cannot load {settings.kafka_ssl_cafile!r}: {_reason(exc)}") from None
    if settings.kafka_ssl_certfile:
        password = settings.kafka_ssl_key_password
        try:
            # A callable, even for no password: OpenSSL would prompt on the terminal for an
            # encrypted key otherwise.
            context.load_cert_chain(settings.kafka_ssl_certfile,
                                    settings.kafka_ssl_keyfile or None, password=lambda: password)
        except (OSError, ssl.SSLError) as exc:
            key = settings.kafka_ssl_keyfile or settings.kafka_ssl_certfile
            raise ConfigError(
                "STREAM_KAFKA_SSL_CERTFILE",
                f"cannot load the client certificate {settings.kafka_ssl_certfile!r} with its "
                f"key {key!r}: {_reason(exc)}; check STREAM_KAFKA_SSL_CERTFILE, "
                "STREAM_KAFKA_SSL_KEYFILE and STREAM_KAFKA_SSL_KEY_PASSWORD",
            ) from None
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class _ConnectFailures(logging.Filter):
    """Takes aiokafka's per-server connect errors, which it logs before raising without them.

    They are reported once instead: classified into a refusal or KafkaUnavailable, or as one
    warning when another bootstrap server answered.
    """

    def __init__(self, floor: int) -> None:
        super().__init__()
        self.causes: list[BaseException] = []
        self._floor = floor  # the level the logger had: a quieted one stays quiet

    def filter(self, record: logging.LogRecord) -> bool:
        cause = record.args[-1] if isinstance(record.args, tuple) and record.args else None
        if record.levelno >= logging.ERROR and isinstance(cause, BaseException):
            self.causes.append(cause)
            return False
        return record.levelno >= self._floor


def _refusal(settings: Settings, causes: Sequence[BaseException]) -> KafkaRefused | None:
    """The configuration fault among `causes`, if any: retrying cannot cure it."""
    where = f"Kafka at {settings.kafka_bootstrap}"
    for cause in causes:
        if isinstance(cause, _SASL_REFUSALS):
            return KafkaRefused(
                f"{where} refused the SASL {settings.kafka_sasl_mechanism} login of user "
                f"{settings.kafka_sasl_username!r} ({type(cause).__name__}); check "
                "STREAM_KAFKA_SASL_USERNAME, STREAM_KAFKA_SASL_PASSWORD and "
                "STREAM_KAFKA_SASL_MECHANISM"
            )
        if isinstance(cause, ssl.SSLCertVerificationError):
            return KafkaRefused(
                f"the certificate of {where} failed verification ({cause.verify_message}); "
                "check STREAM_KAFKA_SSL_CAFILE (the CA that signed the broker's certificate)"
                " and that STREAM_KAFKA_BOOTSTRAP names a host the certificate is for"
            )
        if isinstance(cause, ssl.SSLError) and cause.reason in _CLIENT_CERT_REJECTED:
            return KafkaRefused(
                f"{where} rejected our client certificate ({cause.reason}); check "
                "STREAM_KAFKA_SSL_CERTFILE and STREAM_KAFKA_SSL_KEYFILE"
            )
    return None


async def _client_certificate_refusal(settings: Settings) -> ssl.SSLError | None:
    """The TLS alert a broker sends when it rejects our client certificate, if it does.

    Under TLS 1.3 that alert comes after the handshake, and aiokafka reports only a closed
    connection (as for a broker that went away): one TLS connection of our own reads it.
    """
    host, _, port = settings.kafka_bootstrap.split(",")[0].strip().rpartition(":")
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=ssl_context(settings)),
            TLS_PROBE_TIMEOUT_S)
        await asyncio.wait_for(reader.read(1), TLS_PROBE_TIMEOUT_S)
    except ssl.SSLError as exc:
        return exc if exc.reason in _CLIENT_CERT_REJECTED else None
    except (OSError, ValueError, TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.close()
    return None


def _describe(causes: Sequence[BaseException]) -> str:
    return "; ".join(dict.fromkeys(str(cause) or type(cause).__name__ for cause in causes))


async def start(client: _Startable, settings: Settings) -> None:
    """Start `client` (admin, producer or consumer), retrying brokers that do not answer.

    Raises KafkaRefused at once for refused credentials or certificates, and
    KafkaUnavailable, naming STREAM_KAFKA_BOOTSTRAP and STREAM_KAFKA_SECURITY_PROTOCOL,
    once STREAM_KAFKA_STARTUP_TIMEOUT_MS has passed without an answer.
    """
    deadline = time.monotonic() + settings.kafka_startup_timeout_s
    backoff = RETRY_BACKOFF_S
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    while True:
        # The causes are logged at ERROR, also by a logger a tool has quieted.
        failures = _ConnectFailures(client_log.getEffectiveLevel())
        client_log.addFilter(failures)
        client_log.setLevel(min(logging.ERROR, client_log.getEffectiveLevel()))
        try:
            await client.start()
        except KafkaConnectionError as exc:
            causes: list[BaseException] = failures.causes or [exc]
        else:
            if failures.causes:
                log.warning("some bootstrap servers failed",
                            extra={"causes": [str(c) for c in failures.causes]})
            return
        finally:
            client_log.removeFilter(failures)
            client_log.setLevel(level)
        if settings.kafka_security_protocol.endswith("SSL") and not _refusal(settings, causes):
            alert = await _client_certificate_refusal(settings)
            causes += [] if alert is None else [alert]
        refusal = _refusal(settings, causes)
        if refusal is not None:
            raise refusal
        left = deadline - time.monotonic()
        if left <= 0:
            bound = settings.kafka_startup_timeout_s
            raise KafkaUnavailable(
                settings.kafka_bootstrap,
                f"{_describe(causes)}; check STREAM_KAFKA_BOOTSTRAP and "
                f"STREAM_KAFKA_SECURITY_PROTOCOL ({settings.kafka_security_protocol}), "
                + (f"retried for {bound:g} s" if bound else "tried once"),
            )
        if backoff == RETRY_BACKOFF_S:
            log.warning("Kafka does not answer yet; retrying",
                        extra={"causes": [str(c) for c in causes],
                               "bootstrap": settings.kafka_bootstrap,
                               "startup_timeout_s": settings.kafka_startup_timeout_s})
        await asyncio.sleep(min(backoff, left))
        backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
