"""The bare HTTP loop: 64 workers POSTing SMS with httpx, to price one API call.

`python -m bench.http_loop URL COUNT` posts COUNT synthetic SMS (64 at a time, one shared
httpx client of 64 connections, body read and JSON-decoded) and prints one JSON line:
calls, seconds, and the CPU seconds (user + system) the calls took. It is what a
hand-written client of the parse API costs, with no Kafka, limiter or MongoDB: the
`http-cost` scenario divides `stream run`'s CPU per HTTP-processed SMS by it.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

import httpx
import orjson

from stream.tools.synthetic import synthetic_sms

WORKERS = 64
WARM_UP_CALLS = 200


async def _post_all(url: str, count: int) -> dict[str, float]:
    bodies = [orjson.dumps(sms) for sms in synthetic_sms(random.Random(1), count=count)]
    limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
    async with httpx.AsyncClient(limits=limits, timeout=30.0, trust_env=False) as client:

        async def worker(share: list[bytes]) -> None:
            for body in share:
                response = await client.post(url, content=body)
                orjson.loads(response.content)

        async def run(work: list[bytes]) -> None:
            await asyncio.gather(*(worker(work[i::WORKERS]) for i in range(WORKERS)))

        await run(bodies[:WARM_UP_CALLS])
        cpu, wall = time.process_time(), time.perf_counter()
        await run(bodies)
        return {
            "calls": count,
            "seconds": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu,
        }


def main() -> int:
    url, count = sys.argv[1], int(sys.argv[2])
    print(orjson.dumps(asyncio.run(_post_all(url, count))).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
