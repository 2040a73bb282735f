"""Quota headers: what a response says is left of the upstream's window, and the pace it sets.

`parse_quota` reads the rate-limit headers (X-RateLimit-*, RateLimit-*, the structured
RateLimit / RateLimit-Policy). `QuotaPace` turns the answers into a pace: the remaining
quota (less the calls in flight) spent evenly until the window resets; an exhausted quota
asks for a pause until the reset. While the headers last they override the measured rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["QUOTA_MIN_RATE", "UNIX_TIME_AFTER", "Quota", "QuotaPace", "parse_quota"]

# With quota headers, a window without a fresh header is paced at the last limit per window
# (never below this rate), so a reset does not release every waiting call at once.
QUOTA_MIN_RATE = 1.0
UNIX_TIME_AFTER = 1_000_000_000.0
"""A quota Reset this large is a Unix time (2001 on), not seconds from now: no window lasts
31 years."""


@dataclass(frozen=True, slots=True)
class Quota:
    """What a response's rate-limit headers said: `remaining` calls of `limit` until the
    window resets in `reset_s` seconds (`window_s` long, when the headers name it)."""

    remaining: float
    reset_s: float
    limit: float | None = None
    window_s: float | None = None


def _number(text: str) -> float | None:
    """The leading number of a header value ("100", "100, 100;w=60", " 5 "), else None."""
    head = text.split(",", 1)[0].split(";", 1)[0].strip()
    try:
        value = float(head)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _params(item: str) -> dict[str, str]:
    """The parameters of one structured-field item: '"default";q=100;w=60' -> {q, w}."""
    pairs = (part.partition("=") for part in item.split(";")[1:])
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def parse_quota(headers: Mapping[str, str], now_unix: float | None = None) -> Quota | None:
    """What the rate-limit headers of a response announce, if it has any.

    Reads, first match wins: the structured `RateLimit: "p";r=..;t=..` with
    `RateLimit-Policy: "p";q=..;w=..` (IETF draft 08+); `RateLimit-Remaining/Reset/Limit`
    (earlier drafts: Reset in seconds, Limit may carry `;w=`); `X-RateLimit-Remaining/
    Reset/Limit`, whose Reset is seconds from now or, when larger than UNIX_TIME_AFTER, a
    Unix time (compared with `now_unix`, the wall clock by default). Unreadable -> None.
    `headers` are looked up by lower-case name.
    """
    structured = headers.get("ratelimit")
    if structured is not None:
        params = _params(structured.split(",", 1)[0])
        remaining, reset = _number(params.get("r", "")), _number(params.get("t", ""))
        if remaining is not None and reset is not None:
            policy = _params(headers.get("ratelimit-policy", "").split(",", 1)[0])
            return Quota(
                remaining, reset, _number(policy.get("q", "")), _number(policy.get("w", ""))
            )
    for prefix in ("ratelimit-", "x-ratelimit-"):
        remaining = _number(headers.get(prefix + "remaining", ""))
        reset = _number(headers.get(prefix + "reset", ""))
        if remaining is None or reset is None:
            continue
        if prefix == "x-ratelimit-" and reset > UNIX_TIME_AFTER:
            reset = max(0.0, reset - (time.time() if now_unix is None else now_unix))
        limit_text = headers.get(prefix + "limit", "")
        window = _number(_params("x;" + limit_text.split(";", 1)[-1]).get("w", ""))
        return Quota(remaining, reset, _number(limit_text), window if ";" in limit_text else None)
    return None


class QuotaPace:
    """The pace the quota headers set: the remaining calls spread evenly until the reset."""

    def __init__(self) -> None:
        self.pace = 0.0
        self.until = -math.inf  # the pace holds until then
        self._end = -math.inf  # the tightest estimate of the current window's end
        self._remaining = math.inf
        self.window_rate = 0.0  # the last limit per window; 0: the headers named none
        self._window = 0.0  # seconds: named by the headers, or the longest reset seen

    def current(self, now: float) -> float | None:
        """Calls per second the headers allow at `now`; None when they say nothing."""
        if now < self.until:
            return self.pace
        if self.window_rate > 0:
            return self.window_rate
        return None

    def on_answer(self, now: float, quota: Quota, overtaken: int, in_flight: int) -> float | None:
        """Take what an answer's headers said; the time to pause until, if it is exhausted.

        `overtaken`: calls granted after the answer's own. An answer is overtaken by up to
        those (not only those still in flight: taking a slow answer for a new window moved
        the window's end out and under-spent every window by ~3 %); more than that, or the
        old window's end passing, is a new window.
        """
        end = now + max(0.0, quota.reset_s)
        if now >= self._end or quota.remaining > self._remaining + overtaken + 1:
            self._end = end
            self._remaining = quota.remaining
        else:
            self._end = min(self._end, end)  # resets round up: keep the tightest
            self._remaining = min(self._remaining, quota.remaining)
        left = self._end - now
        # The window's length: named by the headers, or the longest reset seen.
        self._window = quota.window_s or max(self._window, quota.reset_s, 1.0)
        if quota.limit is not None and quota.limit > 0:
            self.window_rate = quota.limit / self._window
        spendable = self._remaining - in_flight
        self.until = self._end
        if spendable < 1 or left <= 0:
            self.pace = self.window_rate or QUOTA_MIN_RATE
            if self._remaining < 1:
                return self._end
        else:
            self.pace = spendable / left
        return None
