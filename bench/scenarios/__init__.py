"""The scenarios, in the order a full run takes them.

`pipeline` goes first: `latency` and `recovery` produce at half the SMS/s it measured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench.figures import ScenarioResult
from bench.harness import Context
from bench.scenarios import (
    batch_sweep,
    http_cost,
    latency,
    parser,
    peers,
    pipeline,
    profile,
    query,
    recovery,
    scaling,
    slow_api,
    status_cost,
)

__all__ = ["SCENARIOS"]

Scenario = Callable[[Context], Awaitable[ScenarioResult]]

SCENARIOS: dict[str, tuple[Scenario, str]] = {
    "pipeline": (pipeline.run, "stream run vs a hand-written loop on a backlog; peak RSS"),
    "peers": (peers.run, "stream run vs Quix Streams, arroyo, the loop, a bare getmany"),
    "batch-sweep": (batch_sweep.run, "STREAM_BATCH_MAX 1..2000: SMS/s and p99 delay"),
    "scaling": (scaling.run, "1, 2, 3 consumers of one group: aggregate SMS/s"),
    "http-cost": (http_cost.run, "CPU per HTTP-processed SMS: baseline, own (h11), httpx clients"),
    "slow-api": (slow_api.run, "http processor vs one call at a time; rate-limited goodput"),
    "latency": (latency.run, "produce-to-stored delay at a fixed rate"),
    "recovery": (recovery.run, "kill -9 one of two consumers under load"),
    "profile": (profile.run, "pyinstrument on stream run: where the time goes"),
    "parser": (parser.run, "parse_sms µs per SMS against the parser of commit 912dcc3"),
    "query": (query.run, "readers' queries with/without their indexes; indexes' write cost"),
    "status-cost": (status_cost.run, "the status reporter's CPU against a member's at 2,000 SMS/s"),
}
