"""Time, injected: one `Clock` for the processing path, so tests can drive it by hand.

The engine, the limiter, the HTTP processor and the MongoDB sink read time only from the
`Clock` the composition root (`stream.app`) passes them, so a limiter's pause and the
loop's readiness check compare instants of one clock. `stream.devkit.fakes.ManualClock` is
the test double: time moves only when a test says so, which makes "paused until exactly
its not-before" a plain assertion. The adapters that only pace themselves (the topic
watch, the status reporter and follower, the retry router's backoff) use asyncio and
`time` directly: none of their instants is compared with the loop's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock Unix seconds: record timestamps, not-before headers, processed_at."""
        ...

    def monotonic(self) -> float:
        """Seconds for intervals and deadlines; never jumps."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time (backoff, probe intervals)."""
        ...


class SystemClock:
    """The real clocks of the process."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
