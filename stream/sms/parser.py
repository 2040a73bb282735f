"""The builtin SMS parser: one SMS in, one flat, uniform, JSON-ready result out.

`parse_sms` is the hot path of the `builtin` processor, so it is pure, deterministic and
offline, and built for speed: one pass finds every amount (`money`), keyword checks are
substring tests on the lower-cased body, and the expensive field patterns run only for the
category they belong to (`transaction`, `otp`, `orders`). It never raises on any text.
The result follows the contract in `stream.sms.result` (re-exported here with
`validate_result`).

This module decides the category; each category's module holds the words that signal it
and the extraction of its fields. Substring tests on the lower-cased body: a few dozen cost
about as much as one regex scan.

Literal-led patterns: a pattern whose every alternative starts with a literal character (or
that starts with one character class) lets the regex engine skip, in C, to the positions
where a match can start; one that starts with a look-around or "\\b" is tried at every
position. So "\\bcr" is written "c(?<=\\bc)r" and "(?<!not )share" "s(?<!not s)hare": same
matches. The patterns of every module of the parser are written that way.
"""

from __future__ import annotations

import re
from typing import Any

from stream.sms.money import BARE_AMOUNT, money_spans
from stream.sms.orders import BOOKING, DELIVERY, order_fields
from stream.sms.otp import HANDOVER_CODE, OTP_STRONG, OTP_WEAK, otp_code, otp_fields
from stream.sms.result import (
    CATEGORIES,
    MAX_SCAN_CHARS,
    MAX_TEXT_CHARS,
    RESULT_KEYS,
    SCHEMA_VERSION,
    validate_result,
)
from stream.sms.transaction import DEBIT_CREDIT_WORD, TXN_STRONG, TXN_WEAK, transaction_fields

__all__ = [
    "CATEGORIES",
    "MAX_SCAN_CHARS",
    "MAX_TEXT_CHARS",
    "RESULT_KEYS",
    "SCHEMA_VERSION",
    "parse_sms",
    "validate_result",
]


def _lower(text: str) -> str:
    """Lower-case with offsets kept: a few characters (such as "İ") lower-case to two."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _any_of(words: tuple[str, ...]) -> re.Pattern[str]:
    """A pattern that finds whether any of `words` occurs: one scan, one alternative per first
    character (literal-led), instead of one substring test per word."""
    rests: dict[str, list[str]] = {}
    for word in words:
        rests.setdefault(word[0], []).append(re.escape(word[1:]))
    return re.compile(
        "|".join(f"{re.escape(first)}(?:{'|'.join(rest)})" for first, rest in rests.items())
    )


_PROMO = (
    "% off", "% cashback", " sale", "offer", "cashback", "discount", "coupon", "use code",
    "reply stop", "text stop", "opt out", "opt-out", "unsubscribe", "t&c", "tnc",
    "terms apply", "shop now", "order now", "book now", "apply now", "recharge", "hurry",
    "last chance", "exclusive", "deals", "lottery", "prize", "win ", "won ", "pre-approved",
    "congratulations", "buy 1", "free ", "free!", "save up to", "grab ", "just ", "only!",
    "new arrivals", "members ", "click", "upgrade to", "dial *", "unlimited", "mega ",
)
_PROMO_ANY = _any_of(_PROMO)
"""Most SMS that get as far as counting promotional words have none."""

_PERSONAL_SENDER = re.compile(r"\+?\d[\d ]{7,}")


def _hits(low: str, keywords: tuple[str, ...]) -> int:
    return sum(map(low.__contains__, keywords))


def _mentions(low: str, keywords: tuple[str, ...]) -> bool:
    return any(map(low.__contains__, keywords))


def _is_transaction(result: dict[str, Any], low: str, sender: str, *, strong: bool) -> bool:
    """Whether a body with an amount and a payment word is a transaction notice.

    Bank-like evidence (account tail, balance, reference) settles it. Without it, a payment
    word is not enough next to promotional, booking or delivery wording, or from a person's
    phone number ("I paid Rs 200 for the auto").
    """
    if result["amount"] is None:
        return False
    if (
        result["account_tail"] is not None
        or result["balance"] is not None
        or result["reference"] is not None
    ):
        return True
    promo = _hits(low, _PROMO) if _PROMO_ANY.search(low) else 0
    if strong and promo < 2:
        return True
    return not (
        promo
        or _mentions(low, BOOKING)
        or _mentions(low, DELIVERY)
        or _PERSONAL_SENDER.fullmatch(sender)
    )


# ------------------------------------------------------------------ public API


def _empty(category: str) -> dict[str, Any]:
    result: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    result["schema_version"] = SCHEMA_VERSION
    result["category"] = category
    return result


def parse_sms(body: str, sender: str = "") -> dict[str, Any]:
    """Classify one SMS and extract its fields; see the module docstring for the contract.

    Called by the builtin processor for every SMS and by the reference parse API. Never
    raises: text it cannot read is category "other".
    """
    text = body[:MAX_SCAN_CHARS]
    low = _lower(text)
    spans = money_spans(text)

    # An OTP message may quote an amount ("OTP for INR 1,999.00 txn"), so it is decided
    # first; a bare "code"/"PIN" yields to booking, delivery and money signals.
    # Decided on words first: the five code patterns cost more than the word tests.
    strong_otp = _mentions(low, OTP_STRONG)
    if (
        (strong_otp or (not spans and _mentions(low, OTP_WEAK)))
        and not _mentions(low, DELIVERY)
        and not (
            (not strong_otp or HANDOVER_CODE.search(low)) and _mentions(low, BOOKING)
        )
        and (code := otp_code(text)) is not None
    ):
        result = _empty("otp")
        otp_fields(result, text, low, code, sender)
        return result

    bare = None if spans else BARE_AMOUNT.search(low)
    if spans or bare is not None:
        # "£3.20 at Greggs. Your balance is £57.44" names no verb, but states a balance.
        strong = _mentions(low, TXN_STRONG) or bool(DEBIT_CREDIT_WORD.search(low))
        if strong or _mentions(low, TXN_WEAK) or (len(spans) > 1 and "bal" in low):
            result = _empty("transaction")
            transaction_fields(result, text, low, sender, spans, bare)
            if _is_transaction(result, low, sender, strong=strong):
                return result

    promo = _hits(low, _PROMO) if _PROMO_ANY.search(low) else 0
    booking = _hits(low, BOOKING)
    delivery = _hits(low, DELIVERY)
    if promo >= 2 or (promo and not (booking or delivery)):
        return _empty("promotional")
    if booking or delivery:
        result = _empty("booking" if booking > delivery else "delivery")
        order_fields(result, text, low)
        # Platforms send from IDs and short codes; "Did you get the tickets?" from a
        # person's number is a conversation unless it carries a booking or tracking number.
        if result["reference"] is not None or not _PERSONAL_SENDER.fullmatch(sender):
            return result
    return _empty("other")

