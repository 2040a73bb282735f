"""`/metrics`, `/healthz` and `/readyz` on one port.

Liveness asks only "is the loop turning?" (a stuck loop is fixed by a restart); readiness
asks "can this replica do useful work now?" (group joined, MongoDB answers, the limiter is
not holding every call back, consumption not halted), which a restart would not fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream.observability.httpserver import Request, Response, Routes, json_response
from stream.observability.metrics import READY

__all__ = ["LIVENESS_STALL_S", "Probes", "routes"]

LIVENESS_STALL_S = 60.0
"""An iteration waits at most batch_wait for data or a commit's request timeout (40 s)."""


@dataclass(frozen=True)
class Probes:
    """Read-only views of the running process, polled by the endpoints."""

    loop_stalled_s: Callable[[], float]
    """Seconds since the loop last turned, on the runtime's clock."""
    joined: Callable[[], bool]
    mongo_ok: Callable[[], bool]
    limiter_open: Callable[[], bool]
    halted: Callable[[], str | None]
    """Why consumption is halted, or None."""


def routes(probes: Probes) -> Routes:
    def checks() -> dict[str, bool]:
        return {
            "group_joined": probes.joined(),
            "mongo_reachable": probes.mongo_ok(),
            "limiter_open": probes.limiter_open(),
            "not_halted": probes.halted() is None,
        }

    async def metrics(_: Request) -> Response:
        # Readiness as a series too: alerts see what the probe sees, even where none probes.
        READY.set(1 if all(checks().values()) else 0)
        return Response(200, {"content-type": CONTENT_TYPE_LATEST}, generate_latest())

    async def healthz(_: Request) -> Response:
        stalled_s = probes.loop_stalled_s()
        ok = stalled_s < LIVENESS_STALL_S
        return json_response({"ok": ok, "loop_stalled_s": round(stalled_s, 3)}, 200 if ok else 503)

    async def readyz(_: Request) -> Response:
        results = checks()
        ok = all(results.values())
        body: dict[str, object] = {"ok": ok, "checks": results}
        halted = probes.halted()
        if halted is not None:
            body["halted"] = halted
        return json_response(body, 200 if ok else 503)

    return {("GET", "/metrics"): metrics, ("GET", "/healthz"): healthz, ("GET", "/readyz"): readyz}
