"""`stream upstream`: the reference upstream from the command line."""

from __future__ import annotations

import argparse
import asyncio
import signal

from stream.devkit.upstream.behaviour import QUOTA_FORMATS, UpstreamBehaviour, parse_schedule
from stream.devkit.upstream.server import ReferenceUpstream
from stream.observability import logs

__all__ = ["main"]


def _behaviour_from_args(args: argparse.Namespace) -> UpstreamBehaviour:
    return UpstreamBehaviour(
        latency=args.latency,
        latency_median=args.latency_median,
        latency_sigma=args.latency_sigma,
        latency_max=args.latency_max,
        rate=args.rate,
        burst=args.burst,
        max_concurrency=args.max_concurrency,
        error_rate=args.error_rate,
        black_hole=args.black_hole,
        retry_after_date=args.retry_after_date,
        window=args.window,
        refuse_503=args.refuse_503,
        quota_headers=args.quota_headers,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream upstream",
        description="Run the reference parse API (POST /v1/parse) with settable faults. "
        "GET /stats, POST /stats/reset and POST /control (JSON behaviour) steer it at run "
        "time. Times are in seconds; 0 switches a limit off.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--port", type=int, default=8080, help="port to bind, 0 = any free (default 8080)")
    add("--token", default="", help="require 'Authorization: Bearer <token>' on /v1/parse")
    add("--latency", type=float, default=0.0, help="fixed latency per request")
    add("--latency-median", type=float, default=0.0, help="lognormal latency median (> 0 on)")
    add("--latency-sigma", type=float, default=0.0, help="lognormal latency shape")
    add("--latency-max", type=float, default=20.0, help="cap on the lognormal latency")
    add("--rate", type=float, default=0.0, help="token-bucket rate, requests/s (429 beyond)")
    add("--burst", type=float, default=0.0, help="token-bucket size (default max(1, rate/10))")
    add("--max-concurrency", type=int, default=0, help="requests in progress (503 beyond)")
    add("--error-rate", type=float, default=0.0, help="share of requests answered 500")
    add("--black-hole", action="store_true", help="accept requests and never answer")
    add("--retry-after-date", action="store_true", help="send Retry-After as an HTTP-date")
    add("--window", type=float, default=0.0, help="fixed window of rate*window calls (> 0 on)")
    add("--refuse-503", action="store_true", help="refuse over the rate with a bare 503")
    add("--quota-headers", default="", choices=QUOTA_FORMATS, help="tell the window's quota")
    add("--schedule", default="", help='phases, e.g. "20s:rate=200,20s:rate=100,0s:rate=200"')
    add("--seed", type=int, default=None, help="seed for latency and error draws")
    add("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


async def _serve(upstream: ReferenceUpstream) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with upstream:
        print(f"reference upstream listening on {upstream.url}", flush=True)
        await stop.wait()


def main(argv: list[str]) -> int:
    """Serve until SIGINT or SIGTERM; exit 2 on a bad flag."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        behaviour = _behaviour_from_args(args)
        schedule = parse_schedule(args.schedule) if args.schedule else ()
    except ValueError as exc:
        parser.error(str(exc))
    logs.configure(args.log_level)
    upstream = ReferenceUpstream(
        behaviour,
        schedule=schedule,
        host=args.host,
        port=args.port,
        token=args.token,
        seed=args.seed,
    )
    asyncio.run(_serve(upstream))
    return 0
