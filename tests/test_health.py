"""`/metrics` carries readiness as `stream_ready`, so alerts see what `/readyz` says."""

from __future__ import annotations

import json

from stream.observability.health import Probes, routes
from stream.observability.httpserver import Request


def _get(path: str) -> Request:
    return Request(method="GET", path=path, query="", headers={}, body=b"")


def _ready_sample(body: bytes) -> float:
    (line,) = [line for line in body.decode().splitlines() if line.startswith("stream_ready ")]
    return float(line.split()[1])


async def test_metrics_report_readiness_as_the_probe_does() -> None:
    mongo_up = False
    probes = Probes(
        loop_stalled_s=lambda: 0.0,
        joined=lambda: True,
        mongo_ok=lambda: mongo_up,
        limiter_open=lambda: True,
        halted=lambda: None,
    )
    handlers = routes(probes)
    metrics, readyz = handlers[("GET", "/metrics")], handlers[("GET", "/readyz")]
    assert _ready_sample((await metrics(_get("/metrics"))).body) == 0
    assert json.loads((await readyz(_get("/readyz"))).body)["ok"] is False
    mongo_up = True
    assert _ready_sample((await metrics(_get("/metrics"))).body) == 1
    assert (await readyz(_get("/readyz"))).status == 200
