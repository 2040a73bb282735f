"""The mix of templates and the records drawn from it, with their received_at times."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from stream.tools.synthetic import orders, other, otps, transactions
from stream.tools.synthetic.fill import phone_number

__all__ = ["MEAN_GAP_S", "labelled_sms", "synthetic_sms"]


MEAN_GAP_S = 2.0
"""Mean time between two synthetic SMS: received_at spreads like a steady trickle.

The i-th SMS falls at a random point of the gap that ends `i * MEAN_GAP_S` after the first,
so `count` SMS span at most `(count - 1) * MEAN_GAP_S`, whatever the draws.
"""


# Each template carries its weight: roughly the mix of an SMS inbox, transactions and OTPs
# first. The order is part of what a seed reproduces.
_TEMPLATES = (
    *transactions.TEMPLATES, *otps.TEMPLATES, *orders.TEMPLATES, *other.TEMPLATES
)
_WEIGHTS = tuple(template.weight for template in _TEMPLATES)


def _first(start: datetime | None, count: int) -> datetime:
    """`start` in UTC (naive means UTC); without one, early enough for the last to be past."""
    if start is None:
        return datetime.now(UTC) - timedelta(seconds=max(0, count - 1) * MEAN_GAP_S)
    return start.astimezone(UTC) if start.tzinfo else start.replace(tzinfo=UTC)


def labelled_sms(
    rng: random.Random, *, count: int, start: datetime | None = None
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """`count` synthetic SMS records, each with the fields its template put in.

    The first is received at `start`, the others in ascending order after it (MEAN_GAP_S);
    without a `start`, the last is received at the latest now. The labels let tests and the
    demo check the builtin parser against what was meant: `category` always, and the
    amount, currency, OTP, reference... where the template knows them. Draws from `rng`
    exactly as `synthetic_sms` does.
    """
    first = _first(start, count)
    when = first
    for number in range(1, count + 1):
        sms_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        template = rng.choices(_TEMPLATES, weights=_WEIGHTS)[0]
        sender, body, fields = template.make(rng, when)
        record = {
            "id": sms_id,
            "sender": sender,
            "body": body,
            "received_at": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "recipient": phone_number(rng, template.region),
        }
        yield record, {"category": template.category, **fields}
        when = first + timedelta(seconds=(number - rng.random()) * MEAN_GAP_S)


def synthetic_sms(
    rng: random.Random, *, count: int, start: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """`count` synthetic SMS records: id, sender, body, received_at (UTC, "Z") and recipient.

    Called by `stream produce --count N`, the demo and the benchmarks; the same seed and
    `start` give the same records. Without a `start`, every `received_at` is in the past.
    """
    for record, _ in labelled_sms(rng, count=count, start=start):
        yield record
