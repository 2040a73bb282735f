"""`stream stack up|down|status`: the local dev-stack from a shell or a Makefile."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from stream.devkit.stack.core import (
    BROKER_COUNTS,
    READY_TIMEOUT_S,
    down,
    ensure_up,
    secure_env_file,
    status,
)
from stream.errors import StackError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=Path(".stack"),
                        help="stack dir: state, data and logs (default: .stack)")
    parser = argparse.ArgumentParser(
        prog="stream stack",
        description="Local Kafka (one broker or a 3-broker cluster) and Mongo-wire server, "
                    "no Docker. Services named by STREAM_KAFKA_BOOTSTRAP / STREAM_MONGO_URL "
                    "are used instead of started, unless they are this stack's own (its env "
                    "file exported in the shell).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", parents=[common],
                             help="start what is not running; print the STREAM_* lines")
    up.add_argument("--cache-dir", type=Path, default=None,
                    help="fetched jars and built binaries (default: $XDG_CACHE_HOME/stream "
                         "or ~/.cache/stream)")
    up.add_argument("--kafka-port", type=int, default=None,
                    help="Kafka listener port (default: the last one if free, else any)")
    up.add_argument("--brokers", type=int, choices=BROKER_COUNTS, default=None,
                    help="Kafka nodes: 3 is a KRaft cluster with replication 3 and min ISR 2 "
                         "for failover tests (default: as last time, else 1)")
    up.add_argument("--secure", action=argparse.BooleanOptionalAction, default=None,
                    help="also listen with SASL_SSL (SCRAM-SHA-512) and with mutual TLS (SSL, "
                         "client certificate required); client settings go to env.sasl_ssl "
                         "and env.ssl in the stack dir (default: as last time, else no)")
    up.add_argument("--timeout", type=float, default=READY_TIMEOUT_S,
                    help="seconds to wait for the services to answer, after any build")
    commands.add_parser("down", parents=[common], help="stop the processes `up` started")
    commands.add_parser("status", parents=[common],
                        help="each service's process and whether it answers; exit 1 if unhealthy")
    return parser


async def _up(args: argparse.Namespace) -> int:
    endpoints = await ensure_up(args.dir, args.cache_dir, kafka_port=args.kafka_port,
                                brokers=args.brokers, timeout_s=args.timeout,
                                secure=args.secure)
    if not endpoints.started:
        print(f"stack in {args.dir} is already up", file=sys.stderr)
    print(endpoints.env_lines(), end="")
    print(f"(also written to {args.dir / 'env'})", file=sys.stderr)
    for protocol, settings in endpoints.secure.items():
        print(f"{protocol} clients: the settings in {secure_env_file(args.dir, protocol)} "
              f"(Kafka at {settings['STREAM_KAFKA_BOOTSTRAP']})", file=sys.stderr)
    return 0


async def _down(args: argparse.Namespace) -> int:
    stopped = await asyncio.to_thread(down, args.dir)
    print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


async def _status(args: argparse.Namespace) -> int:
    services = await status(args.dir)
    for service in services:
        print(service.line())
    return 0 if all(service.healthy for service in services) else 1


def main(argv: list[str]) -> int:
    """Entry point of `stream stack`; StackError is printed, not traced, with exit code 1."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # Progress of the slow first-run steps (fetch, build) is worth showing.
    logging.getLogger("stream.devkit.stack").setLevel(logging.INFO)
    # Refused connections while a service starts are expected; the probe reports the outcome.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    command = {"up": _up, "down": _down, "status": _status}[args.command]
    try:
        return asyncio.run(command(args))
    except StackError as exc:
        print(f"stream stack: {exc}", file=sys.stderr)
        return 1
