"""What the tests share: one manual clock, one `eventually`, and a wait on the loop's turns.

A test that asserts something did NOT happen waits for the loop to turn (`turns`) or moves
the manual clock, never for a fixed time: a fixed sleep is either too short on a busy
machine or slower than it needs to be.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

from stream.devkit.fakes import ManualClock
from stream.engine.loop import ConsumerLoop

__all__ = ["ManualClock", "eventually", "turns"]

T = TypeVar("T")

POLL_FIRST_S = 0.005
POLL_MAX_S = 0.2
"""Polls start fast (an in-memory condition holds within milliseconds) and back off to
POLL_MAX_S (a condition read from a broker or a database costs a round trip)."""


async def eventually(
    check: Callable[[], T | Awaitable[T]], *, within: float = 60.0, what: str = "condition"
) -> T:
    """Poll `check` (plain or async) until it returns something truthy; fail after `within`
    seconds of real time, naming `what` and the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pause = POLL_FIRST_S
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"no {what} within {within} s (last: {value!r})")
        await asyncio.sleep(pause)
        pause = min(pause * 2, POLL_MAX_S)


async def turns(loop: ConsumerLoop, count: int = 2) -> None:
    """Wait until `loop` completed `count` more iterations: with two, one began and ended
    after this call, so whatever it would have done on what came before, it has done."""
    target = loop.iterations + count
    await eventually(lambda: loop.iterations >= target, within=10, what=f"{count} loop turns")
