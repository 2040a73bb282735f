"""`stream status`: the whole consumer group at a glance, from Kafka alone.

Joins three sources: the members' status records (`<topic>.status`: throughput, in flight,
halts, limiter, DLQ counts by reason), Kafka's group API (which members the coordinator
lists) and its offsets (committed and end offsets per partition of the main topic and each
retry topic: the lag; beginning and end offsets of the DLQ: its depth). Nothing is written.

Exit code: 0 when some member is live and none is halted, `EXIT_HALTED` when a live member
is halted, `EXIT_NO_MEMBERS` when none is live, so the command serves as a check.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections import Counter
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.adapters.kafka import client_options
from stream.adapters.status import STALE_INTERVALS, StatusFollower
from stream.config import Settings
from stream.tools.common import EXIT_OK, run_tool
from stream.tools.dlq import dlq_entries

__all__ = [
    "EXIT_HALTED",
    "EXIT_NO_MEMBERS",
    "GroupReader",
    "dlq_reasons",
    "exit_code",
    "main",
    "render",
]

EXIT_HALTED = 3
EXIT_NO_MEMBERS = 4
WATCH_EVERY_S = 2.0
FORGET_AFTER_S = 3600.0
"""A crashed member's last record stays in the compacted topic (no tombstone): after an
hour of silence it is no longer shown."""
CLIENT_ID_PREFIX = "stream-"
"""Members join with client id `stream-<member key>`, which is how they are matched."""


def _retry_pattern(topic: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(topic)}\.retry\.(\d+)$")


def _member_state(record: dict[str, Any], now: float, listed: set[str] | None) -> str:
    """live, joining (not in the group yet), stale (silent for three intervals), or gone
    (the group no longer lists it although it reported partitions)."""
    interval = float(record.get("interval_s") or 5.0)
    if now - float(record.get("at") or 0.0) > STALE_INTERVALS * interval:
        return "stale"
    if listed is None or f"{CLIENT_ID_PREFIX}{record.get('member')}" in listed:
        return "live"
    return "gone" if record.get("partitions") else "joining"


class GroupReader:
    """Reads the group's state on demand, keeping its Kafka clients between reads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._follower = StatusFollower(settings)
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> GroupReader:
        self._admin = AIOKafkaAdminClient(**client_options(self._settings))
        await self._admin.start()
        self._offsets = AIOKafkaConsumer(
            **client_options(self._settings), group_id=None, enable_auto_commit=False
        )
        await self._offsets.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._follower.aclose()
        if self._offsets is not None:
            await self._offsets.stop()
        if self._admin is not None:
            await self._admin.close()

    async def _listed_clients(self) -> tuple[str, set[str] | None]:
        assert self._admin is not None
        (response,) = await self._admin.describe_consumer_groups([self._settings.group_id])
        (group,) = response.to_object()["groups"]
        if group["error_code"]:
            return "unknown", None
        return group["state"], {member["client_id"] for member in group["members"]}

    async def _partitions(self, topics: list[str]) -> list[TopicPartition]:
        assert self._admin is not None
        described = await self._admin.describe_topics(topics)
        return sorted(
            TopicPartition(topic["topic"], p["partition"])
            for topic in described
            if not topic["error_code"]
            for p in topic["partitions"]
        )

    async def read(self) -> dict[str, Any]:
        """The group's state now, as the JSON that `stream status --json` prints."""
        assert self._admin is not None
        assert self._offsets is not None
        settings = self._settings
        statuses = await self._follower.refresh()
        state, listed = await self._listed_clients()
        existing = set(await self._admin.list_topics())
        pattern = _retry_pattern(settings.topic)
        retries = sorted(
            (t for t in existing if pattern.match(t)),
            key=lambda t: int(pattern.match(t).group(1)),  # type: ignore[union-attr]
        )
        consumed = [t for t in (settings.topic, *retries) if t in existing]
        tps = await self._partitions(consumed) if consumed else []
        dlq = settings.dlq_topic
        dlq_tps = await self._partitions([dlq]) if dlq in existing else []
        ends = await self._offsets.end_offsets([*tps, *dlq_tps]) if tps or dlq_tps else {}
        begins = await self._offsets.beginning_offsets(dlq_tps) if dlq_tps else {}
        committed = await self._admin.list_consumer_group_offsets(settings.group_id)
        now = time.time()

        members = []
        owners: dict[tuple[str, int], str] = {}
        dlq_by_reason: Counter[str] = Counter()
        for key, record in sorted(statuses.items()):
            if now - float(record.get("at") or 0.0) > FORGET_AFTER_S:
                continue
            member_state = _member_state(record, now, listed)
            members.append(_member(key, record, member_state, now))
            counts = record.get("dlq_by_reason") or {}
            dlq_by_reason.update({reason: int(n) for reason, n in counts.items()})
            if member_state == "live":
                for topic, partition in record.get("partitions") or []:
                    owners[(topic, partition)] = key
        partitions = []
        for tp in tps:
            offset = committed.get(tp)
            done = offset.offset if offset is not None and offset.offset >= 0 else None
            end = ends.get(tp, 0)
            partitions.append({
                "topic": tp.topic,
                "partition": tp.partition,
                "committed": done,
                "end": end,
                "lag": end - (done or 0),
                "owner": owners.get((tp.topic, tp.partition)),
            })
        live = [m for m in members if m["state"] in ("live", "joining")]
        halts = [
            {"member": m["member"], **m["halt"]} for m in live if m["halt"] is not None
        ]
        lag_by_topic = {t: sum(p["lag"] for p in partitions if p["topic"] == t) for t in consumed}
        return {
            "group": settings.group_id,
            "topic": settings.topic,
            "group_state": state,
            "at": round(now, 3),
            "members": members,
            "live_members": len(live),
            "halts": halts,
            "throughput": {
                "in_per_s": round(sum(float(m["in_per_s"]) for m in live), 1),
                "stored_per_s": round(sum(float(m["stored_per_s"]) for m in live), 1),
            },
            "lag": {
                "main": lag_by_topic.get(settings.topic, 0),
                "retry": sum(v for t, v in lag_by_topic.items() if t != settings.topic),
                "by_topic": lag_by_topic,
            },
            "partitions": partitions,
            "dlq": {
                "topic": settings.dlq_topic,
                "depth": sum(ends.get(tp, 0) - begins.get(tp, 0) for tp in dlq_tps),
                "by_reason": dict(dlq_by_reason.most_common()),
            },
        }


def _member(key: str, record: dict[str, Any], state: str, now: float) -> dict[str, Any]:
    return {
        "member": key,
        "state": state,
        "age_s": round(now - float(record.get("at") or 0.0), 1),
        "host": record.get("host"),
        "version": record.get("version"),
        "started_at": record.get("started_at"),
        "partitions": record.get("partitions") or [],
        "paused": record.get("paused") or [],
        "in_per_s": record.get("in_per_s") or 0.0,
        "stored_per_s": record.get("stored_per_s") or 0.0,
        "in_flight": record.get("in_flight") or 0,
        "halt": record.get("halt"),
        "limiter": record.get("limiter") or {},
        "dlq_by_reason": record.get("dlq_by_reason") or {},
    }


def exit_code(view: dict[str, Any]) -> int:
    if not view["live_members"]:
        return EXIT_NO_MEMBERS
    return EXIT_HALTED if view["halts"] else EXIT_OK


async def dlq_reasons(settings: Settings, limit: int | None = None) -> dict[str, Any]:
    """Scan the DLQ (on demand: it may be long): counts by reason and, up to `limit`, the
    records as `stream dlq list --json` shows them, sender and body masked."""
    reasons: Counter[str] = Counter()
    records: list[dict[str, object]] = []
    async with aclosing(dlq_entries(settings)) as entries:
        async for entry in entries:
            reasons[str(entry["error_class"])] += 1
            if limit is None or len(records) < limit:
                records.append(entry)
    return {"by_reason": dict(reasons.most_common()), "scanned": reasons.total(),
            "records": records}


def _when(unix: object) -> str:
    if not isinstance(unix, int | float):
        return "-"
    return datetime.fromtimestamp(unix, UTC).strftime("%H:%M:%SZ")


def _rate(value: object) -> str:
    return f"{float(value):,.0f}" if isinstance(value, int | float) and value else "-"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _owned(partitions: list[list[Any]], main_topic: str) -> str:
    """`0,3` for main-topic partitions, `+2 retry` for the retry topics' ones."""
    main = [str(p) for t, p in partitions if t == main_topic]
    retry = len(partitions) - len(main)
    return ",".join(main) + (f" +{retry} retry" if retry else "") or "-"


def render(view: dict[str, Any]) -> str:
    """The terminal view: summary, members, halts, partitions, DLQ."""
    stale = sum(1 for m in view["members"] if m["state"] not in ("live", "joining"))
    lag = view["lag"]
    lines = [
        f"group {view['group']} on {view['topic']} ({view['group_state']}) at {_when(view['at'])}:"
        f" {view['live_members']} live member(s), {stale} stale",
        f"throughput: {_rate(view['throughput']['in_per_s'])} in/s,"
        f" {_rate(view['throughput']['stored_per_s'])} stored/s;"
        f" lag: main {lag['main']:,}, retry {lag['retry']:,};"
        f" DLQ: {view['dlq']['depth']:,} record(s)",
        "",
    ]
    rows = [["MEMBER", "HOST", "STATE", "PARTITIONS", "IN/S", "STORED/S", "IN-FLIGHT",
             "LIMIT", "EST/S", "PACED/S", "ACCEPTED/S", "HALT"]]
    for m in view["members"]:
        limiter = m["limiter"]
        rows.append([
            m["member"], str(m["host"]),
            m["state"] + (f" {m['age_s']:.0f}s" if m["state"] == "stale" else ""),
            _owned(m["partitions"], view["topic"]),
            _rate(m["in_per_s"]), _rate(m["stored_per_s"]), str(m["in_flight"]),
            _rate(limiter.get("limit")), _rate(limiter.get("estimated_rate")),
            _rate(limiter.get("paced_rate")), _rate(limiter.get("accepted_rate")),
            m["halt"]["reason"] if m["halt"] else "-",
        ])
    lines += _table(rows) if view["members"] else ["no member has reported (is any running?)"]
    for halt in view["halts"]:
        check = f" (check {halt['setting']})" if halt.get("setting") else ""
        lines += ["", f"HALTED {halt['member']} since {_when(halt.get('since'))}:"
                      f" {halt['reason']}: {halt['message']}{check}"]
    lines.append("")
    rows = [["TOPIC", "PARTITION", "OWNER", "COMMITTED", "END", "LAG"]]
    for p in view["partitions"]:
        rows.append([p["topic"], str(p["partition"]), p["owner"] or "-",
                     "-" if p["committed"] is None else str(p["committed"]), str(p["end"]),
                     str(p["lag"])])
    lines += _table(rows)
    reasons = view["dlq"]["by_reason"]
    if reasons:
        lines += ["", "dead-lettered by reason (live and stale members' counters): "
                  + ", ".join(f"{r} {n:,}" for r, n in reasons.items())]
    return "\n".join(lines)


async def _status(settings: Settings, args: argparse.Namespace) -> int:
    async with GroupReader(settings) as reader:
        while True:
            view = await reader.read()
            if args.dlq:
                view["dlq"]["scan"] = await dlq_reasons(settings, limit=0)
            if args.json:
                sys.stdout.write(orjson.dumps(view).decode() + "\n")
            else:
                screen = render(view)
                if args.dlq:
                    scan = view["dlq"]["scan"]
                    screen += f"\nDLQ scan: {scan['scanned']:,} record(s): " + ", ".join(
                        f"{r} {n:,}" for r, n in scan["by_reason"].items())
                sys.stdout.write(("\x1b[H\x1b[2J" if args.watch else "") + screen + "\n")
            sys.stdout.flush()
            if not args.watch:
                return exit_code(view)
            await asyncio.sleep(WATCH_EVERY_S)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream status",
        description="The consumer group at a glance: members, lag per partition, throughput, "
        "halts, the limiter, the DLQ. Exit 0 when healthy, "
        f"{EXIT_HALTED} when a member is halted, {EXIT_NO_MEMBERS} when no member is live.",
    )
    parser.add_argument("--watch", action="store_true", help="refresh in place every 2 s")
    parser.add_argument("--json", action="store_true", help="one JSON object (per refresh)")
    parser.add_argument("--dlq", action="store_true",
                        help="also scan the DLQ for counts by reason (reads the whole topic)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return run_tool("stream status", lambda settings: _status(settings, args))
