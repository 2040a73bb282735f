"""The preamble every operator command shares, so `stream dlq` and `stream produce` fail alike.

`run_tool` reads the settings from the environment, quiets the Kafka clients, runs the
command's coroutine and turns the errors an operator can meet into one line on stderr
(`<prog>: <what went wrong>`) and an exit code; a traceback means a bug.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from aiokafka.errors import KafkaConnectionError, KafkaError

from stream.config import Settings
from stream.errors import ConfigError, StreamError

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "Command",
    "fail",
    "run_tool",
]

EXIT_OK = 0
EXIT_FAILED = 1
"""The command ran and failed: Kafka unreachable, a missing topic, a bad input line."""
EXIT_CONFIG = 2
"""Nothing was attempted: a bad setting (argparse uses 2 for a bad option too)."""
EXIT_INTERRUPTED = 130
"""128 + SIGINT, what a shell reports for a command stopped with Ctrl-C."""

Command = Callable[[Settings], Coroutine[Any, Any, int]]


def fail(prog: str, message: str) -> None:
    """Print one error line on stderr, prefixed by the command's name."""
    print(f"{prog}: {message}", file=sys.stderr)


def _kafka_message(settings: Settings, exc: KafkaError) -> str:
    if isinstance(exc, KafkaConnectionError):
        return f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc})"
    return f"Kafka: {type(exc).__name__}: {exc}"


def run_tool(prog: str, command: Command) -> int:
    """Run `command(settings)` and return its exit code, or the code of the error it met.

    Called by each tool's `main` after parsing its arguments. A ConfigError exits
    EXIT_CONFIG before anything is attempted; a KafkaError, StreamError or OSError exits
    EXIT_FAILED; Ctrl-C exits EXIT_INTERRUPTED. Anything else propagates (a bug).
    """
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        fail(prog, f"configuration error: {exc}")
        return EXIT_CONFIG
    # The clients retry transient broker errors (a new topic's leader election) themselves;
    # their warnings would only garble the command's output.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(command(settings))
    except KafkaError as exc:
        fail(prog, _kafka_message(settings, exc))
    except (StreamError, OSError) as exc:
        fail(prog, str(exc))
    except KeyboardInterrupt:
        fail(prog, "interrupted")
        return EXIT_INTERRUPTED
    return EXIT_FAILED
