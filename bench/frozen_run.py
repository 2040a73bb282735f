"""`python -m bench.frozen_run`: `stream run` with the frozen baseline HTTP client.

`bench/frozen_httpclient.py` is the hand-written client the h11-based one replaced, kept
unchanged so `http-cost` can price both in one run. It is bench-only: its parser is the one
with the defects the hostile suite (tests/test_http_hostile.py) covers, so it never serves.
The child reads the same environment as `stream run` and serves the same /metrics.
"""

from __future__ import annotations

import sys

from bench import frozen_httpclient
from stream import cli
from stream.processors import http


class FrozenClient(frozen_httpclient.HttpClient):
    """The baseline behind today's interface: the Idempotency-Key is not sent (it had none)."""

    async def post(  # type: ignore[override]
        self, body: bytes, *, idempotency_key: str | None = None
    ) -> frozen_httpclient.Reply:
        return await super().post(body)


def main() -> int:
    http.HttpClient = FrozenClient  # type: ignore[misc, assignment]
    return cli.main(["run"])


if __name__ == "__main__":
    sys.exit(main())
