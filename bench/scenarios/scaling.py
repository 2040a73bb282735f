"""scaling: 1, 2 and 3 `stream run` processes in one group on a 6-partition backlog.

All members are spawned at once; a run is timed from the spawn until the group has
committed the whole topic, so joins and rebalances are part of it, as in a real scale-out.
The counts rotate between repeats against drift; the ratio is against 1 member of the
same repeat.
"""

from __future__ import annotations

import time

from bench.figures import Figure, ScenarioResult, ratios
from bench.harness import Context

__all__ = ["run"]

MEMBERS = (1, 2, 3)
TIMEOUT_S = 600.0


async def _one(ctx: Context, topic: str, total: int, members: int) -> float:
    env = ctx.stream_env(topic)
    started = time.monotonic()
    children = [
        ctx.stream(f"scaling-{members}", Context.another_member(env)) for _ in range(members)
    ]
    timing = await ctx.wait_committed(
        env["STREAM_GROUP_ID"], topic, total, since=started, children=children, limit_s=TIMEOUT_S
    )
    for child in children:
        await child.stop()
    await ctx.expect_stored(env["STREAM_MONGO_COLLECTION"], total)
    await ctx.drop(env["STREAM_MONGO_COLLECTION"])
    return timing.rate


async def run(ctx: Context) -> ScenarioResult:
    total = ctx.size(60_000, 3_000)
    topic = await ctx.backlog("scaling", total)
    rates: dict[int, list[float]] = {n: [] for n in MEMBERS}
    for i in range(ctx.repeats):
        for members in MEMBERS[i % 3 :] + MEMBERS[: i % 3]:
            rates[members].append(await _one(ctx, topic, total, members))
    cpus = ctx.cpus
    figures = []
    for members in MEMBERS:
        figures.append(
            Figure(f"{members} consumer{'s' if members > 1 else ''}", "SMS/s", rates[members])
        )
        if members > 1:
            figures.append(
                Figure(
                    f"{members} consumers vs 1",
                    "x",
                    ratios(rates[members], rates[1]),
                    note=f"{cpus} CPUs shared with Kafka and MongoDB",
                )
            )
    notes = [
        f"{total:,} SMS on 6 partitions, one group, members spawned together; SMS/s from the "
        "spawn to the whole topic committed (joins and rebalances included).",
        f"This machine has {cpus} CPUs and the broker and MongoDB server run on them too, so "
        "extra members compete with the servers they feed; the ratio says how much of a "
        "second member's work this machine can absorb, not how the group scales on spare "
        "cores.",
    ]
    return ScenarioResult(
        "scaling",
        {"records": total, "members": MEMBERS, "cpus": cpus},
        figures,
        notes,
        {str(n): rates[n] for n in MEMBERS},
    )
