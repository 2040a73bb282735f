"""Adaptive limiter for calls to the upstream parse API: a paced rate and a concurrency limit.

Who calls it: the HTTP processor, once per API call::

    with await limiter.acquire() as permit:
        response = await client.post(...)
        if response.status_code in (429, 503):
            permit.dropped(retry_after_s, status=status, quota=quota)   # a refusal
        elif response.status_code >= 500:
            permit.dropped(retry_after_s)       # also: timeout, connection error
        elif response.is_success:
            permit.success(elapsed_s, quota)
        else:
            permit.ignore()                     # a 4xx says nothing about capacity

Two controls, because upstreams limit two things. A rate limiter (token bucket, fixed
window, strict spacing) counts requests per unit of time: what matters is the send rate and
its spacing, so calls are *paced* at an estimated allowed rate. A capacity cap counts
requests in progress: the concurrency limit (loss-driven AIMD) handles it, and timeouts.

The parts, each with its own unit tests on a manual clock:

    quota        the rate-limit headers parsed, and the pace they set while they last
    estimator    the allowed rate measured from refusals, probes upward, the refill fit
    concurrency  the AIMD limit on calls in flight, its fractional slot, outages
    pacer        calls spaced evenly at the pace, on schedule when timers fire late
    pause        Retry-After, outage backoff, an exhausted quota: no new call before its end
    admission    Permit and its three outcomes; the synchronous decisions on the clock
    waiting      `AdaptiveLimiter`: the asyncio shell that parks callers of `acquire`

The decisions are synchronous and read the injected clock (`try_acquire`,
`next_attempt_at`, the permit reports), so a simulator drives this very code in virtual
time; `acquire` only waits.
"""

from stream.processors.limiter.admission import RATE_SOURCES, LimiterState, Permit, Source
from stream.processors.limiter.concurrency import (
    BACKOFF_BASE_S,
    BETA_MAX,
    BETA_MIN,
    RESTART_FRACTION,
)
from stream.processors.limiter.quota import Quota, parse_quota
from stream.processors.limiter.waiting import AdaptiveLimiter

__all__ = [
    "BACKOFF_BASE_S",
    "BETA_MAX",
    "BETA_MIN",
    "RATE_SOURCES",
    "RESTART_FRACTION",
    "AdaptiveLimiter",
    "LimiterState",
    "Permit",
    "Quota",
    "Source",
    "parse_quota",
]
