"""profile: where `stream run`'s time goes on the pipeline's workload, by pyinstrument.

`stream run` runs under a sampling profiler (bench/profiled.py) on a backlog, and is
stopped once the group has committed it. Printed: SMS/s under the profiler, self time by
module of ours (stream.sms.parser, stream.sms.codec, ...) and by library (aiokafka, pymongo, bson,
prometheus_client, asyncio, idle waiting for I/O), and the functions with the most self
time; bench/profile.html holds the whole tree,
bench/profile.txt the same as text.
"""

from __future__ import annotations

import json
import shutil
import sys

from bench.figures import Figure, ScenarioResult
from bench.harness import BENCH_DIR, Context

__all__ = ["run"]

TIMEOUT_S = 600.0
TREE_LINES = 60


async def run(ctx: Context) -> ScenarioResult:
    total = ctx.size(30_000, 2_000)
    topic = await ctx.backlog("profile", total)
    out = ctx.log_dir / "profile"
    out.mkdir()
    env = ctx.stream_env(topic)
    child = ctx.spawn_stream_like(
        "profile", [sys.executable, "-m", "bench.profiled", str(out)], env
    )
    timing = await ctx.wait_committed(
        child.group, topic, total, since=child.started, children=[child], limit_s=TIMEOUT_S
    )
    await child.stop()
    await ctx.expect_stored(child.collection, total)
    await ctx.drop(child.collection)
    for name in ("profile.html", "profile.txt", "profile.json"):
        shutil.copy(out / name, BENCH_DIR / name)
    summary = json.loads((out / "profile.json").read_text())
    tree = (out / "profile.txt").read_text().splitlines()
    print("\n".join(tree[:TREE_LINES]))
    sampled = summary["total_s"]
    shares = {name: seconds / sampled * 100 for name, seconds in summary["by_library"].items()}
    figures = [Figure("SMS/s under the profiler", "SMS/s", [timing.rate])]
    figures += [
        Figure(f"self time: {name}", "%", [share]) for name, share in shares.items() if share >= 1
    ]
    top = "; ".join(
        f"{function} {seconds / sampled * 100:.1f} %"
        for function, seconds in summary["top_functions"][:8]
    )
    notes = [
        f"{total:,} SMS, one stream run under pyinstrument (1 ms sampling, main thread); "
        f"{sampled:.1f} s sampled from start to stop. Top self time: {top}.",
        "Whole tree: bench/profile.html (and profile.txt).",
    ]
    return ScenarioResult("profile", {"records": total}, figures, notes, summary)
