"""What the status reporter costs a member: CPU per report, bytes per second.

    python -m bench.status_cost [--seconds 20] [--watch 30]

By hand, against any broker and a group already running; `python -m bench status-cost`
(bench/scenarios/status_cost.py) measures the same against a member it runs, and records it.

1. Runs a `StatusReporter` alone in this process, reporting every 100 ms for `--seconds`
   (a member's 24 assigned partitions), against the broker at STREAM_KAFKA_BOOTSTRAP; the
   process's CPU time over the reports sent is the whole cost of one report: sampling,
   encoding, the producer's work and the wake-ups.
2. With `--watch S`, reads the status records of the group running on STREAM_TOPIC twice,
   S seconds apart, and prints each member's CPU use and throughput over that span, and the
   reporter's share of it: one report's cost per `interval_s` over the member's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from aiokafka import TopicPartition

from stream.adapters.status import MemberView, StatusReporter, read_statuses
from stream.config import Settings

PARTITIONS = [TopicPartition("sms", p) for p in range(6)] + [
    TopicPartition(f"sms.retry.{n}", p) for n in (1, 2, 3) for p in range(6)
]


async def report_cost(settings: Settings, seconds: float) -> tuple[float, int]:
    """(CPU seconds per report, bytes per report), reporting on `<settings.topic>.status`."""
    view = MemberView(
        assignment=lambda: PARTITIONS, paused=list, in_flight=lambda: 120, halt=lambda: None
    )
    reporter = StatusReporter(settings.replace(status_interval_s=0.1), "bench-member", view)
    reporter.start()
    await asyncio.sleep(2.0)  # producer started, metadata known
    reports, sent, cpu = reporter.reports_sent, reporter.bytes_sent, time.process_time()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu
    reports = reporter.reports_sent - reports
    sent = reporter.bytes_sent - sent
    await reporter.aclose()
    return cpu / max(1, reports), sent // max(1, reports)


async def _watch(settings: Settings, seconds: float, per_report_cpu: float) -> None:
    first = await read_statuses(settings)
    await asyncio.sleep(seconds)
    second = await read_statuses(settings)
    for key, now in second.items():
        then = first.get(key)
        if then is None or now["at"] <= then["at"]:
            continue
        span = now["at"] - then["at"]
        cpu_rate = (now["cpu_s"] - then["cpu_s"]) / span
        in_rate = (now["totals"]["consumed"] - then["totals"]["consumed"]) / span
        sampled = (now["reporter_cpu_s"] - then["reporter_cpu_s"]) / span
        whole = per_report_cpu / now["interval_s"]
        print(
            f"member {key}: {in_rate:,.0f} SMS/s, CPU {cpu_rate * 100:.1f} % of a core; "
            f"reporter: sampling+encoding measured in the member {sampled / cpu_rate:.3%} "
            f"of its CPU, whole report (bench) {whole / cpu_rate:.3%}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.status_cost")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--watch", type=float, default=0.0)
    args = parser.parse_args()
    settings = Settings.from_env({k: v for k, v in os.environ.items() if k.startswith("STREAM_")})
    per_report, size = await report_cost(settings.replace(topic="bench_status_cost"), args.seconds)
    interval = Settings().status_interval_s
    print(
        f"one report: {per_report * 1e3:.2f} ms CPU, {size} bytes; at the default "
        f"{interval:g} s interval: {per_report / interval * 100:.3f} % of a core, "
        f"{size / interval:.0f} B/s per member"
    )
    if args.watch:
        await _watch(settings, args.watch, per_report)


if __name__ == "__main__":
    asyncio.run(main())
