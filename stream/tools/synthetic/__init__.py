"""Synthetic SMS traffic for `stream produce`, the demo and the benchmarks.

Bodies come from templates of the formats people actually receive (Indian bank and UPI
alerts, M-PESA, Nigerian bank alerts, US/UK/EU card and app notices, OTPs, couriers,
airlines, cabs, offers, personal texts), filled with random merchants, names, amounts,
references and dates, so the builtin parser is exercised the way real traffic would.
One module per kind of SMS (`transactions`, `otps`, `orders`, `other`) over shared fillers
(`fill`); `traffic` draws records from their mix, `malformed` the values the codec must
dead-letter.

Everything is drawn from the `random.Random` passed in, ids included, so a seed reproduces
a run exactly; only `received_at` depends on `start`. Without a `start`, the records end
no later than now: an SMS is received before anyone can produce it.
"""

from __future__ import annotations

from stream.tools.synthetic.malformed import DEFAULT_MAX_SMS_BYTES, malformed_records
from stream.tools.synthetic.traffic import MEAN_GAP_S, labelled_sms, synthetic_sms

__all__ = [
    "DEFAULT_MAX_SMS_BYTES",
    "MEAN_GAP_S",
    "labelled_sms",
    "malformed_records",
    "synthetic_sms",
]
