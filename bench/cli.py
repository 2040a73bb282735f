"""`python -m bench [SCENARIO ...] [--smoke]`: run the scenarios, print and save the figures.

Each scenario prints one line of figures as it ends; the run ends with the markdown table.
A full run merges its scenarios into bench/results.json and re-renders bench/results.md
(so `python -m bench latency` refreshes one scenario and keeps the others); `--smoke` uses
tiny counts and one repeat, to prove the harness works (CI), and writes no results file.
Exit status: 0, or 1 if a scenario could not measure (a child died, a count was wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.figures import ScenarioResult, markdown
from bench.harness import BENCH_DIR, BenchError, Context, machine
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


def _write(results: list[ScenarioResult], info: dict[str, str]) -> None:
    """Merge this run's scenarios into results.json and re-render results.md."""
    path = BENCH_DIR / "results.json"
    saved: dict[str, Any] = {}
    if path.exists():
        saved = json.loads(path.read_text()).get("scenarios", {})
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    for result in results:
        saved[result.scenario] = result.to_json() | {"measured_at": stamp, "machine": info}
    ordered = [saved[name] for name in SCENARIOS if name in saved]
    path.write_text(json.dumps({"updated": stamp, "scenarios": saved}, indent=1) + "\n")
    machines = {_header(r["machine"]) for r in ordered}
    lines = ["# Benchmark results", "", *sorted(machines), ""]
    lines += [
        f"- {r['scenario']}: measured {r['measured_at']} in {r['seconds']} s" for r in ordered
    ]
    lines += ["", "Medians over the repeats (n) with min-max; ratios are pairwise.", ""]
    (BENCH_DIR / "results.md").write_text("\n".join([*lines, markdown(ordered), ""]))


async def _run(args: argparse.Namespace, names: list[str]) -> tuple[list[ScenarioResult], bool]:
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    endpoints = await ensure_up(args.stack_dir)
    log_dir = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    repeats = args.repeats or (1 if args.smoke else REPEATS)
    results: list[ScenarioResult] = []
    failed = False
    info = machine()
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
    if args.smoke:
        print("\n(smoke run: results files not written)")
    elif results:
        _write(results, info)
        print(f"\nwritten: {BENCH_DIR / 'results.json'}, {BENCH_DIR / 'results.md'}")
    return results, failed


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
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
        _, failed = asyncio.run(_run(args, names))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted", file=sys.stderr)
        return 130
    print(f"bench: {time.monotonic() - started:.0f} s in all")
    return 1 if failed else 0
