"""`python -m bench [SCENARIO ...] [--smoke]`: run the scenarios, print and save the figures.

Each scenario prints one line of figures as it ends; the run ends with the markdown table.
A full run records its scenarios in bench/results.json and re-renders docs/performance.md
from the whole record (`bench/performance.py`), so `python -m bench latency` refreshes one
scenario and keeps the others; `--smoke` uses tiny counts and one repeat, to prove the
harness works (CI), and records and renders into a scratch directory instead.
Exit status: 0, or 1 if a scenario could not measure (a child died, a count was wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.figures import ScenarioResult, markdown
from bench.harness import BENCH_DIR, BenchError, Context, machine
from bench.performance import PAGE, command_line, commit, machine_text, publish
from bench.scenarios import SCENARIOS
from stream.devkit.stack import ensure_up

__all__ = ["main"]

REPEATS = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Throughput, latency and scaling of stream run on the local stack, "
        "side by side with baselines measured in the same run.",
        epilog="scenarios: "
        + "; ".join(f"{name}: {about}" for name, (_, about) in SCENARIOS.items()),
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help="scenarios to run (default: all)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny counts, one repeat, no results files"
    )
    parser.add_argument("--repeats", type=int, help=f"repeats per figure (default {REPEATS})")
    parser.add_argument(
        "--rate", type=float, help="SMS/s for latency and recovery (default: half of pipeline's)"
    )
    parser.add_argument(
        "--stack-dir", type=Path, default=BENCH_DIR.parent / ".stack", help="local stack dir"
    )
    return parser


def _header(info: dict[str, str]) -> str:
    return (
        f"machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']} RAM, "
        f"Python {info['python']}, Linux {info['kernel']}; stack: Kafka (1 broker) and "
        f"{info['mongo']}, on the same machine"
    )


def _record(
    results: list[ScenarioResult], info: dict[str, str], command: str, into: Path | None
) -> Path:
    """Record this run's scenarios and re-render the page (in `into`, a scratch dir, if given)."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    order = list(SCENARIOS)
    records = [
        result.to_json()
        | {
            "command": command,
            "commit": commit(),
            "machine": machine_text(info),
            "measured_at": stamp,
            "group": "bench",
            "order": order.index(result.scenario),
            "about": SCENARIOS[result.scenario][1],
            "stack": f"Kafka (1 broker) and {info['mongo']} on the same machine",
            "load": info["load"],
        }
        for result in results
    ]
    if into is None:
        publish(records)
        return PAGE
    publish(records, into / "results.json", into / "performance.md")
    return into / "performance.md"


async def _run(
    args: argparse.Namespace, names: list[str], command: str
) -> tuple[list[ScenarioResult], bool]:
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    endpoints = await ensure_up(args.stack_dir)
    log_dir = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    repeats = args.repeats or (1 if args.smoke else REPEATS)
    results: list[ScenarioResult] = []
    failed = False
    info = machine() | {"load": f"{os.getloadavg()[0]:.1f}"}
    async with Context(
        endpoints, smoke=args.smoke, repeats=repeats, rate=args.rate, log_dir=log_dir
    ) as ctx:
        info["mongo"] = await ctx.mongo_server()
        print(_header(info))
        print(
            f"repeats: {repeats}{' (smoke)' if args.smoke else ''}; child logs: {log_dir} "
            "(kept if a scenario fails)"
        )
        for name in names:
            started = time.monotonic()
            print(f"{name}: running...", flush=True)
            try:
                result = await SCENARIOS[name][0](ctx)
            except BenchError as exc:
                failed = True
                print(f"{name}: FAILED: {exc}", flush=True)
                continue
            finally:
                ctx.kill_leftovers()
            result.seconds = time.monotonic() - started
            results.append(result)
            print(f"{result.line()}  ({result.seconds:.0f} s)", flush=True)
    if not failed:
        shutil.rmtree(log_dir)
    print()
    print(markdown([r.to_json() for r in results]))
    if results:
        scratch = Path(tempfile.mkdtemp(prefix="stream-bench-smoke-")) if args.smoke else None
        page = _record(results, info, command, scratch)
        print(f"\nwritten: {page}{' (smoke run: a scratch copy)' if args.smoke else ''}")
    return results, failed


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    names = args.scenarios or list(SCENARIOS)
    started = time.monotonic()
    try:
        command = command_line("python -m bench", argv)
        _, failed = asyncio.run(_run(args, names, command))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted", file=sys.stderr)
        return 130
    print(f"bench: {time.monotonic() - started:.0f} s in all")
    return 1 if failed else 0
