"""`stream dlq list`: DLQ records on stdout, one line (or JSON object) each, and a summary
by reason on stderr."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import dataclass, field

import orjson

from stream.config import Settings
from stream.tools.common import EXIT_OK
from stream.tools.dlq.read import NO_REASON, describe, dlq_records, escape

__all__ = ["LINE_COLUMNS", "list_dlq"]

LINE_COLUMNS = 120
"""Every line `list` prints fits a terminal this wide; the error message is what gets cut."""


def _cut(line: str) -> str:
    return line if len(line) <= LINE_COLUMNS else line[: LINE_COLUMNS - 1] + "…"


def _wrapped(label: str, text: str) -> Iterator[str]:
    """`  label: text`, continued on lines indented under it, none over LINE_COLUMNS."""
    first = f"  {label}: "
    width = LINE_COLUMNS - len(first)
    for start in range(0, max(len(text), 1), width):
        yield (first if start == 0 else " " * len(first)) + text[start : start + width]


def _text_lines(entry: dict[str, object], main_topic: str) -> Iterator[str]:
    """One line per record, the fields that identify it first and the error message last
    (what `_cut` shortens; `--json` has it whole); the origin's topic only when it is not
    `main_topic`; the body by its length. Then the raw bytes, if the entry has them."""
    shown = {k: "-" if v is None else v for k, v in entry.items()}
    origin = f"{shown['original_partition']}:{shown['original_offset']}"
    if entry["original_topic"] not in (None, main_topic):
        origin = f"{entry['original_topic']}:{origin}"
    parts = [
        f"{shown['partition']}:{shown['offset']}",
        str(shown["error_class"]),
        f"attempt={shown['attempt']}",
        str(shown["first_failed_at"]),
        f"from={origin}",
        f"id={shown['sms_id']}",
        f"sender={shown['sender']}",
        f"body={len(str(entry['body']))}ch" if entry["body"] is not None else "body=-",
    ]
    if entry["replayed_from"] is not None:
        parts.append(f"replayed_from={entry['replayed_from']}")
    if entry["value_omitted"] is not None:
        parts.append(f"value_omitted={entry['value_omitted']}B")
    parts.append(str(shown["error_message"]))
    yield _cut("  ".join(parts))
    if "value" in entry:
        yield from _wrapped("key", "-" if entry["key"] is None else str(entry["key"]))
        yield from _wrapped("value", "-" if entry["value"] is None else str(entry["value"]))
        headers = entry.get("headers")
        for name, value in headers if isinstance(headers, list) else ():
            yield from _wrapped(f"header {escape(name.encode())}", value)


@dataclass
class _Listing:
    """What `list` read and showed, for its summary."""

    read: Counter[str] = field(default_factory=Counter)
    came_back: Counter[str] = field(default_factory=Counter)
    shown: int = 0
    stopped_at_limit: bool = False

    def summary(self, topic: str) -> Iterator[str]:
        total = sum(self.read.values())
        limit = " (stopped at --limit)" if self.stopped_at_limit else ""
        yield f"{total} record(s) read from {topic}, {self.shown} shown{limit}"
        width = max((len(reason) for reason in self.read), default=0)
        for reason, count in sorted(self.read.items(), key=lambda rc: (-rc[1], rc[0])):
            back = self.came_back[reason]
            note = f"  ({back} came back after a replay)" if back else ""
            yield _cut(f"  {reason:<{width}}  {count:>6}{note}")


async def list_dlq(settings: Settings, args: argparse.Namespace) -> int:
    """`stream dlq list`: records on stdout, the summary by reason on stderr."""
    stop = asyncio.Event() if args.follow else None
    if stop is not None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    listing = _Listing()
    wanted = set(args.reason or ())
    async with aclosing(dlq_records(settings, follow=stop)) as records:
        async for record in records:
            if args.limit is not None and listing.shown >= args.limit:
                listing.stopped_at_limit = True
                break
            entry = describe(record, raw=args.raw)
            reason = str(entry["error_class"] or NO_REASON)
            listing.read[reason] += 1
            listing.came_back[reason] += entry["replayed_from"] is not None
            if wanted and reason not in wanted:
                continue
            if args.json:
                print(orjson.dumps(entry).decode(), flush=stop is not None)
            else:
                for line in _text_lines(entry, settings.topic):
                    print(line, flush=stop is not None)
            listing.shown += 1
    for line in listing.summary(settings.dlq_topic):
        print(line, file=sys.stderr)
    return EXIT_OK

