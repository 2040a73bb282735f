"""`stream <command>`: dispatches to the module that owns the command.

Each command module exposes `main(argv) -> int` and builds its own argument parser, so a
command imports only what it needs (`stream stack up` never loads the Kafka client).
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import version

__all__ = ["main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("stream.app", "run one consumer of the group (config from STREAM_* variables)"),
    "produce": ("stream.tools.produce", "produce SMS from a JSON-lines file or synthetic ones"),
    "dlq": ("stream.tools.dlq", "list or replay the dead-letter topic"),
    "status": ("stream.tools.status", "the consumer group at a glance (--watch, --json)"),
    "console": ("stream.tools.console", "read-only web console of the group (own port)"),
    "upstream": ("stream.devkit.upstream", "run the reference parse API with settable faults"),
    "stack": ("stream.devkit.stack", "local dev-stack: up, down, status"),
    "demo": ("stream.devkit.demo", "end to end on the local stack: produce, process, show results"),
}


def _usage() -> str:
    lines = ["usage: stream <command> [options]   (stream --version)", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += [
        "",
        "`stream <command> --help` describes a command, `stream run --help` the settings.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `argv` (default: the process's) to its command; return the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(_usage(), file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        print(f"stream {version('stream')}")
        return 0
    if args[0] not in COMMANDS:
        print(f"stream: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    code: int = module.main(args[1:])
    return code


if __name__ == "__main__":
    sys.exit(main())
