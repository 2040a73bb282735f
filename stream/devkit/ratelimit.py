"""The rate limiters real APIs use, as plain models on a clock the caller passes in.

One model for both places that play an upstream: the simulator (`limiter_sim`, virtual
time) and the reference upstream (`upstream`, real HTTP), so a shape behaves the same in
the tests' virtual time and over sockets. Each `take` admits or refuses one call at `now`:

- `TokenBucket`: `rate` per second, bursts up to `size` (strict spacing is a size of 1);
- `FixedWindow`: `quota` calls per `window` seconds, windows aligned to its start.

`whole_seconds` rounds a wait up as a Retry-After or a quota Reset is sent: whole seconds,
at least one.
"""

from __future__ import annotations

import math

__all__ = ["FixedWindow", "TokenBucket", "whole_seconds"]


def whole_seconds(wait_s: float) -> int:
    """A wait as APIs send it (Retry-After, quota Reset): whole seconds, rounded up, >= 1."""
    return max(1, math.ceil(wait_s))


class TokenBucket:
    """Admission at `rate` per second with bursts up to the bucket's size.

    It starts with `tokens` (full, whatever the size turns out to be, by default); the rate
    and size may change from call to call, as an upstream's behaviour does.
    """

    def __init__(self, now: float, tokens: float = math.inf) -> None:
        self.tokens = tokens
        self._updated = now

    def refill(self, rate: float, size: float, now: float) -> None:
        """Add what `rate` refilled since the last call, up to `size`. A call that arrives
        before the last one (overtaken on its way) refills nothing."""
        if now < self._updated:
            return
        self.tokens = min(size, self.tokens + (now - self._updated) * rate)
        self._updated = now

    def take(self, rate: float, size: float, now: float) -> float:
        """0.0 if a token was taken, else the seconds until one will be there. A `rate` of
        0 is no limit: the bucket stays full for when a rate is set."""
        if rate <= 0:
            self.tokens, self._updated = size, now
            return 0.0
        self.refill(rate, size, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


class FixedWindow:
    """Admission of `quota` calls per window of `window` seconds, aligned to `start`."""

    def __init__(self, start: float) -> None:
        self._start = start
        self._used = 0

    def take(self, quota: int, window: float, now: float) -> tuple[bool, float, int]:
        """(accepted, seconds until the window ends, calls left in it after this one)."""
        if now >= self._start + window:
            self._start += math.floor((now - self._start) / window) * window
            self._used = 0
        accepted = self._used < quota
        self._used += accepted
        return accepted, self._start + window - now, quota - self._used
