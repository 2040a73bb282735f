"""The parse result contract (schema_version 1), shared by the builtin parser and the parse API.

Every result has exactly `RESULT_KEYS`, in that order; a field that does not apply is None,
so stored documents are uniform:

    schema_version  int    always 1
    category        str    one of CATEGORIES
    direction       str    "debit" | "credit"                         (transaction)
    amount          float  >= 0, 2 dp                                  (transaction)
    currency        str    ISO 4217 code; "Rs", "$" and "N" read as
                           INR, USD and NGN                            (transaction)
    account_tail    str    2-4 digits of a masked account or card      (transaction)
    counterparty    str    merchant, payee or payer                    (transaction)
                           carrier, airline, hotel or platform         (delivery, booking)
    balance         float  2 dp, negative when overdrawn               (transaction)
    reference       str    txn/UPI ref or M-PESA code                  (transaction)
                           tracking, order, PNR or booking number      (delivery, booking)
    otp             str    4-8 digits, leading zeros kept              (otp)
    service         str    what the code is for, or who sent it        (otp)
    expires_in_s    int    seconds the code stays valid                (otp)

Text fields are trimmed, 1-MAX_TEXT_CHARS long and free of control characters. Only the
first MAX_SCAN_CHARS characters of a body are read. `parse_sms` (`stream.sms.parser`) builds
results to this contract; `validate_result` holds results that come back from the parse API
to it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from stream.errors import PermanentError

__all__ = [
    "CATEGORIES",
    "MAX_SCAN_CHARS",
    "MAX_TEXT_CHARS",
    "RESULT_KEYS",
    "SCHEMA_VERSION",
    "validate_result",
]

SCHEMA_VERSION = 1
CATEGORIES = ("transaction", "otp", "delivery", "booking", "promotional", "other")
RESULT_KEYS = (
    "schema_version",
    "category",
    "direction",
    "amount",
    "currency",
    "account_tail",
    "counterparty",
    "balance",
    "reference",
    "otp",
    "service",
    "expires_in_s",
)
MAX_TEXT_CHARS = 128
"""Longest text field: names and references are short; anything longer is a parse gone wrong."""

MAX_SCAN_CHARS = 2000
"""Only the head of a body is parsed: a 10-part SMS is ~1,600 characters, and the cap bounds
the time an oversized body can take."""


def _invalid(message: str) -> PermanentError:
    return PermanentError(f"parse result {message}", reason="invalid_result")


def _number(key: str, value: object, *, signed: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"{key!r} must be a number or null, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or (number < 0 and not signed):
        raise _invalid(f"{key!r} is {value!r}, outside the finite range it allows")
    return round(number, 2)


_TEXT_FORMS: dict[str, re.Pattern[str] | None] = {
    "currency": re.compile(r"[A-Z]{3}"),
    "account_tail": re.compile(r"\d{2,4}"),
    "otp": re.compile(r"\d{4,8}"),
    "counterparty": None,
    "reference": None,
    "service": None,
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _text(key: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{key!r} must be a string or null, not {type(value).__name__}")
    text = value.strip()
    form = _TEXT_FORMS[key]
    if form is not None and not form.fullmatch(text):
        raise _invalid(f"{key!r} is {value[:40]!r}, which is not {form.pattern}")
    if not text or len(text) > MAX_TEXT_CHARS or _CONTROL.search(text):
        raise _invalid(f"{key!r} must be 1-{MAX_TEXT_CHARS} characters, no control characters")
    return text


def validate_result(obj: object) -> dict[str, Any]:
    """Check a parse result from the parse API against the contract; return it normalised.

    Called by the http processor on every 2xx answer. Normalised means keys in RESULT_KEYS
    order, numbers as floats rounded to 2 dp, text trimmed. Raises
    PermanentError(reason="invalid_result") naming the first problem: asking again for the
    same SMS would get the same answer.
    """
    if not isinstance(obj, dict):
        raise _invalid(f"must be a JSON object, not {type(obj).__name__}")
    if obj.keys() != set(RESULT_KEYS):
        unknown = sorted(map(str, obj.keys() - set(RESULT_KEYS)))
        missing = sorted(set(RESULT_KEYS) - obj.keys())
        raise _invalid(f"has unknown keys {unknown} and lacks keys {missing}")
    version = obj["schema_version"]
    if type(version) is not int or version != SCHEMA_VERSION:
        raise _invalid(f"schema_version is {version!r}, expected {SCHEMA_VERSION}")
    if obj["category"] not in CATEGORIES:
        raise _invalid(f"category {obj['category']!r} is not one of {', '.join(CATEGORIES)}")
    if obj["direction"] not in (None, "debit", "credit"):
        raise _invalid(f"direction {obj['direction']!r} is not debit, credit or null")
    expires = obj["expires_in_s"]
    if expires is not None and (
        isinstance(expires, bool) or not isinstance(expires, int) or expires < 0
    ):
        raise _invalid(f"expires_in_s is {expires!r}, not a non-negative integer or null")
    return {
        "schema_version": SCHEMA_VERSION,
        "category": obj["category"],
        "direction": obj["direction"],
        "amount": _number("amount", obj["amount"], signed=False),
        "currency": _text("currency", obj["currency"]),
        "account_tail": _text("account_tail", obj["account_tail"]),
        "counterparty": _text("counterparty", obj["counterparty"]),
        "balance": _number("balance", obj["balance"], signed=True),
        "reference": _text("reference", obj["reference"]),
        "otp": _text("otp", obj["otp"]),
        "service": _text("service", obj["service"]),
        "expires_in_s": expires,
    }

