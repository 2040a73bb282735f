"""Typed errors: the class of an error decides where a failed SMS goes.

    StreamError
     ├── ConfigError          a setting is missing or invalid; start-up stops, naming it
     │    └── InvalidSettings  every bad setting of one environment, reported at once
     ├── StartupError         a dependency is unusable at start (stop with one line, no traceback)
     │    ├── KafkaUnavailable  the bootstrap servers do not answer
     │    ├── KafkaRefused      a broker refused our credentials or certificate, or we its
     │    └── PortInUse         a server port is taken (the metrics port: before joining)
     ├── StackError           the local dev-stack could not start (missing tool, port, timeout)
     └── ProcessingError      one SMS could not be processed
          ├── TransientError  may succeed later        -> next retry topic (then the DLQ)
          ├── PermanentError  can never succeed as is  -> dead-letter topic at once
          └── SystemicError   not this SMS's fault: every SMS would fail the same way
                              (wrong token, wrong URL, TLS, DNS)  -> halt consumption

Anything else raised while processing is a bug: it crashes the consumer loudly rather
than quietly dead-lettering every record after a bad deploy.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "InvalidSettings",
    "KafkaRefused",
    "KafkaUnavailable",
    "PermanentError",
    "PortInUse",
    "ProcessingError",
    "StackError",
    "StartupError",
    "StreamError",
    "SystemicError",
    "TransientError",
]


class StreamError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(StreamError):
    """A setting is invalid; `setting` names it so the operator knows what to fix."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class InvalidSettings(ConfigError):
    """Every problem found in one environment, so an operator fixes them in one go.

    `errors` each name their setting; `setting` is the first one's (as for one error).
    """

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        if not errors:
            raise ValueError("InvalidSettings needs at least one error")
        self.errors = tuple(errors)
        super().__init__(self.errors[0].setting, "")
        self.args = ("\n".join(str(error) for error in self.errors),)

    def __str__(self) -> str:
        return str(self.args[0])


class StartupError(StreamError):
    """`stream run` cannot start for a reason outside the code; the message is the one line
    it prints (no traceback) before exiting non-zero."""


class KafkaUnavailable(StartupError):
    """No bootstrap server answered (refused, unresolvable, timed out)."""

    def __init__(self, bootstrap: str, cause: str) -> None:
        super().__init__(f"cannot reach Kafka at {bootstrap} ({cause})")
        self.bootstrap = bootstrap


class KafkaRefused(StartupError):
    """A broker refused our SASL login or client certificate, or its certificate failed
    verification: a configuration fault, so start-up stops at once (the message names the
    settings to check) rather than retrying."""


class PortInUse(StartupError):
    """A server port is taken (for `stream run`: another member on this host, or another
    program on the metrics port)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"port {port} on {host} is already in use")
        self.host = host
        self.port = port


class StackError(StreamError):
    """The local dev-stack could not be brought up or inspected."""


class ProcessingError(StreamError):
    """One SMS failed; `reason` is a short, bounded class name used in headers and metrics."""

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class TransientError(ProcessingError):
    """The SMS may succeed later (timeout, 5xx, 429, connection refused).

    `retry_after` (seconds) is the upstream's own hint, when it gave one.
    """

    reason = "transient"

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class PermanentError(ProcessingError):
    """The SMS can never succeed as it is (malformed, rejected by the API, invalid result)."""

    reason = "permanent"


class SystemicError(ProcessingError):
    """Every SMS would fail this way until an operator fixes something outside the record.

    The engine does not route it: it halts consumption (nothing is dead-lettered, nothing
    committed past it) and probes until the fault clears. `setting` names the setting an
    operator should check (e.g. `STREAM_API_TOKEN` for a 401).
    """

    reason = "systemic"

    def __init__(self, message: str, *, reason: str | None = None, setting: str = "") -> None:
        super().__init__(message, reason=reason)
        self.setting = setting
