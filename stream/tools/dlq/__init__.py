"""`stream dlq list` and `stream dlq replay`: inspect the dead-letter topic and send records
back.

    read     reading the DLQ to its end offsets, and `describe` for one record
    listing  `list`: lines or JSON per record, a summary by reason
    replay   `replay`: each record back to the main topic at most once, per category
"""

from __future__ import annotations

import argparse

from stream.tools.common import run_tool
from stream.tools.dlq.listing import LINE_COLUMNS, list_dlq
from stream.tools.dlq.read import describe, dlq_entries, escape
from stream.tools.dlq.replay import (
    NEVER_SUCCEED,
    Category,
    ReplayResult,
    default_prefix,
    replay_dlq,
    run_replay,
)

__all__ = [
    "LINE_COLUMNS",
    "NEVER_SUCCEED",
    "Category",
    "ReplayResult",
    "default_prefix",
    "describe",
    "dlq_entries",
    "escape",
    "main",
    "replay_dlq",
]

PROG = "stream dlq"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect or replay the dead-letter topic (<STREAM_TOPIC>.dlq). Kafka "
        "settings come from STREAM_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser(
        "list",
        help="print DLQ records in (partition, offset) order, a summary by reason on stderr",
    )
    listing.add_argument(
        "--reason", action="append", metavar="CLASS", help="only this error class (repeatable)"
    )
    listing.add_argument("--limit", type=int, metavar="N", help="print at most N records")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument(
        "--raw",
        action="store_true",
        help="also show key, value and headers as escaped bytes, sender and body unmasked",
    )
    listing.add_argument(
        "--follow", action="store_true", help="keep printing new records until Ctrl-C"
    )
    replay = commands.add_parser(
        "replay",
        help="send DLQ records back to the main topic, each at most once",
        description="Send DLQ records back to the main topic, original bytes and headers. "
        "By default every reason that may succeed, skipping records that came back after a "
        f"replay and reasons that cannot succeed ({', '.join(sorted(NEVER_SUCCEED))}).",
    )
    replay.add_argument("--reason", metavar="CLASS", help="only records of this error class")
    replay.add_argument(
        "--include-replayed",
        action="store_true",
        help="also records that came back to the DLQ after a replay",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="count what would be replayed; send nothing"
    )
    replay.add_argument(
        "--group-prefix",
        metavar="P",
        help="prefix of the consumer groups holding the replay positions, one per reason "
        "(default: <STREAM_GROUP_ID>.dlq-replay)",
    )
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        if args.limit is not None and args.limit < 0:
            parser.error("--limit must not be negative")
        return run_tool(PROG, lambda settings: list_dlq(settings, args))
    return run_tool(PROG, lambda settings: run_replay(settings, args))
