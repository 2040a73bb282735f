"""Typed errors: the class of an error decides where a failed SMS goes.

    StreamError
     ├── ConfigError          a setting is missing or invalid; start-up stops, naming it
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

__all__ = [
    "ConfigError",
    "PermanentError",
    "ProcessingError",
    "StackError",
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
