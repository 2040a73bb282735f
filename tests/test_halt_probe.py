"""The member's halt probe asks the topics, the upstream and MongoDB at once.

Each check may take up to its own bound (the topic check up to 30 s while the admin is
slow), and the engine gives the whole probe one such bound: asked in turn, a slow topic
check would leave the upstream unasked.
"""

from __future__ import annotations

import asyncio

from stream.app import _probe
from stream.errors import SystemicError


class _Check:
    """A probe that answers `fault` once `ready` is set (at once when None)."""

    def __init__(self, fault: SystemicError | None, ready: asyncio.Event | None = None) -> None:
        self._fault = fault
        self._ready = ready
        self.asked = asyncio.Event()

    async def probe(self) -> SystemicError | None:
        self.asked.set()
        if self._ready is not None:
            await self._ready.wait()
        return self._fault


async def test_the_checks_run_at_once_so_a_slow_one_does_not_leave_another_unasked() -> None:
    unauthorized = SystemicError("upstream answered 401", reason="upstream_auth")
    processor = _Check(unauthorized)
    topics = _Check(None, ready=processor.asked)  # answers only once the upstream was asked
    sink = _Check(None)
    probe = _probe(processor, sink, topics)  # type: ignore[arg-type]
    assert await asyncio.wait_for(probe(), 5.0) is unauthorized


async def test_the_first_fault_in_the_fixed_order_wins() -> None:
    missing = SystemicError("topic missing", reason="missing_topic")
    down = SystemicError("mongo down", reason="mongo")
    slow = asyncio.Event()
    topics = _Check(missing, ready=slow)
    sink = _Check(down)
    probe = _probe(_Check(None), sink, topics)  # type: ignore[arg-type]
    answer = asyncio.create_task(probe())
    await asyncio.wait_for(sink.asked.wait(), 5.0)
    slow.set()
    assert await asyncio.wait_for(answer, 5.0) is missing
