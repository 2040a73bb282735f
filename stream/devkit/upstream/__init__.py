"""`stream upstream`: the reference parse API, with faults you can set, over real HTTP.

Tests and benchmarks need an upstream that misbehaves on demand and says afterwards what
it saw. `POST /v1/parse` answers the builtin parser's result for `{"id", "sender", "body"}`
unless the current behaviour says otherwise. A request meets the checks in this order:

1. black hole: it is accepted and never answered (the client's timeout ends it);
2. bearer token, when one is set: 401 without it;
3. rate limit: a token bucket (`rate` per second, `burst` deep) or, with `window` > 0, a
   fixed window of `rate * window` calls: 429 with `Retry-After` (to the window's end), or
   with `refuse_503` a bare 503 (nginx `limit_req`); with `quota_headers` every answer
   carries the window's quota (`x`: X-RateLimit-* with Reset in seconds, `x-unix`: Reset
   as a Unix time, `ietf`: RateLimit-Limit/Remaining/Reset, `structured`: RateLimit and
   RateLimit-Policy);
4. concurrency cap: 503 at once when `max_concurrency` requests are already in progress;
5. request body: 400 with a reason if it is not an SMS object;
6. latency (fixed or lognormal), then a share `error_rate` of requests answers 500;
7. otherwise 200 with `parse_sms(body, sender)`.

Behaviour changes at run time through `POST /control` or `ReferenceUpstream.set_behaviour`,
or by a schedule of phases that apply in order from start or reset (the last one holds).
`GET /stats` counts outcomes; `POST /stats/reset` zeroes them and restarts the schedule.

    behaviour  the behaviour and the schedule of phases, checked when made
    server     `ReferenceUpstream`: the HTTP server that applies them
    cli        `stream upstream`
"""

from stream.devkit.upstream.behaviour import Phase, UpstreamBehaviour, parse_schedule
from stream.devkit.upstream.cli import main
from stream.devkit.upstream.server import PARSE_PATH, ReferenceUpstream

__all__ = [
    "PARSE_PATH",
    "Phase",
    "ReferenceUpstream",
    "UpstreamBehaviour",
    "main",
    "parse_schedule",
]
