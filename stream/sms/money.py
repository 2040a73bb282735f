"""Amounts and currencies: every sum of money an SMS states, in one pass.

A digit-led regex the engine can skip through finds the numbers that may stand beside a
currency; a dictionary look-up of the few characters around each then decides which
currency, if any, it is written with.
"""

from __future__ import annotations

import math
import re

__all__ = ["BARE_AMOUNT", "Money", "money_spans", "to_float"]

_ISO_CODES = frozenset((
    "INR", "USD", "EUR", "GBP", "KES", "NGN", "AED", "ZAR", "SGD", "AUD", "CAD", "NZD", "HKD",
    "JPY", "CNY", "PHP", "GHS", "UGX", "TZS", "RWF", "ETB", "EGP", "MAD", "PKR", "BDT", "LKR",
    "NPR", "MYR", "IDR", "THB", "VND", "KRW", "BRL", "MXN", "ARS", "CLP", "COP", "PEN", "CHF",
    "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "RON", "TRY", "ILS", "SAR", "QAR", "KWD", "BHD",
    "OMR", "JOD", "XOF", "XAF", "ZMW", "MWK", "BWP", "NAD", "MUR", "RUB", "UAH",
))
_THREE_DECIMALS = frozenset(("KWD", "BHD", "OMR", "JOD"))
_SYMBOLS = {
    "$": "USD", "US$": "USD", "A$": "AUD", "C$": "CAD", "S$": "SGD", "NZ$": "NZD",
    "HK$": "HKD", "MX$": "MXN", "R$": "BRL", "GH₵": "GHS", "₵": "GHS", "₹": "INR",
    "€": "EUR", "£": "GBP", "₦": "NGN", "¥": "JPY", "₱": "PHP", "₩": "KRW", "₺": "TRY",
    "฿": "THB", "₫": "VND", "₪": "ILS", "₴": "UAH", "₽": "RUB", "৳": "BDT",
}
_PREFIX_WORDS = {
    "rs": "INR", "inr": "INR", "kshs": "KES", "ksh": "KES", "kes": "KES", "ngn": "NGN",
    "usd": "USD", "eur": "EUR", "gbp": "GBP", "dhs": "AED", "dh": "AED", "rm": "MYR",
    "tsh": "TZS", "tk": "BDT", "rp": "IDR",
}
_SUFFIX_WORDS = {
    "eur": "EUR", "euro": "EUR", "euros": "EUR", "kes": "KES", "ksh": "KES", "rs": "INR",
}
_LETTER_PREFIXES = {"R": "ZAR", "N": "NGN"}  # only before a number with separators: "R150.00"
_SYMBOL_ENDS = frozenset(token[-1] for token in _SYMBOLS)
_CURRENCY_END = "".join(sorted(
    {code[-1] for code in _ISO_CODES} | set(_LETTER_PREFIXES)
    | {c for word in _PREFIX_WORDS for c in (word[-1], word[-1].upper())}
)) + "$\\x80-\\U0010ffff"
"""A superset of the last characters of a currency: the letters that end a code or a word
(either case, as words are looked up lower-cased), "$", and anything outside ASCII."""
_BEFORE_FORMS = [  # what may stand between: [.][ ][-], as look-behinds of 0 to 3 characters
    rf"(?<=[{_CURRENCY_END}]{between}\d)"
    for between in ("", "[-. \u00a0]", "[. \u00a0][- \u00a0]", "\\.[ \u00a0]-")
]
# Every number, starting with a digit so the regex engine can skip ahead to candidates, and
# beside it whether a currency could be written there: a character that can end one before
# it (then "." / space / "-", the look-behinds), or the start of a code, word or symbol after
# it (the look-ahead). Both are supersets (`_currency_before` and `_currency_after` decide),
# so a number with neither, such as most dates, times and phone numbers, is skipped with one
# look-up instead of two Python scans of its surroundings.
_MONEY = re.compile(
    r"\d(?:(?P<pre>" + "|".join(_BEFORE_FORMS) + r")|)"
    r"(?:\d{0,2}(?:[,.'\u2019]\d{2,3})+|\d{0,2}(?:[ \u00a0\u202f]\d{3})+|\d{0,11})"
    r"(?:[.,]\d{1,2})?(?!\d)"
    r"(?=(?P<post>[ \u00a0]?(?:[A-Z]{3}|(?i:eur|kes|ksh|rs)|/-|[$\x80-\U0010ffff]))|)"
)
BARE_AMOUNT = re.compile(  # SBI's "debited by 250.0": an amount with no currency at all
    r"(?:debited|credited) (?:by|for|with) (?P<num>\d{1,12}(?:[.,]\d{1,2})?)(?![\d,.])"
)

Money = tuple[float | None, str, int]
"""(value, ISO currency, offset where the currency or number starts)."""


def to_float(num: str, currency: str | None) -> float | None:
    """Read "1,234.50", "1.234,56", "23,45", "1 200,00", "1'250.00", "1,00,000" as numbers."""
    if num.isdigit():  # most amounts in the SMS of a day: "500", "1234"
        return float(num)
    digits = num.replace(" ", "").replace("\u00a0", "").replace("\u202f", "")
    digits = digits.replace("'", "").replace("\u2019", "")
    last = max(digits.rfind("."), digits.rfind(","))
    if last >= 0:
        sep = digits[last]
        decimals = len(digits) - last - 1
        three_dp = decimals == 3 and sep == "." and currency in _THREE_DECIMALS
        if digits.count(sep) == 1 and (decimals <= 2 or three_dp):
            digits = digits[:last].replace(",", "").replace(".", "") + "." + digits[last + 1 :]
        else:
            digits = digits.replace(",", "").replace(".", "")
    value = float(digits)
    return round(value, 2) if math.isfinite(value) else None


def _currency_before(text: str, start: int, num: str) -> tuple[str | None, bool, int]:
    """The currency written before a number ("Rs.", "KES ", "-£"), its sign and offset."""
    j = start
    negative = j > 0 and text[j - 1] == "-"
    if negative:
        j -= 1
    if j > 0 and text[j - 1] in " \u00a0":
        j -= 1
    if j > 0 and text[j - 1] == ".":
        j -= 1
    last = text[j - 1 : j]
    if last.isalpha():  # a word of at most 4 letters standing alone: "Rs", "INR", "Kshs"
        at = j - 1
        while at > 0 and text[at - 1].isalpha() and j - at < 5:
            at -= 1
        if at > 0 and text[at - 1].isalnum():
            return None, False, start
        token = text[at:j]
        if len(token) == 3 and token in _ISO_CODES:
            currency: str | None = token
        elif len(token) == 1:
            currency = _LETTER_PREFIXES.get(token) if ("," in num or "." in num) else None
        else:
            currency = _PREFIX_WORDS.get(token.lower())
    elif last in _SYMBOL_ENDS:  # "$", "US$", "R$", "GH₵", "€"...
        for size in (3, 2, 1):
            at = j - size
            currency = _SYMBOLS.get(text[at:j]) if at >= 0 else None
            if currency is not None and not (at > 0 and text[at - 1].isalnum()):
                break
        else:
            return None, False, start
    else:
        return None, False, start
    if currency is None:
        return None, False, start
    return currency, negative or (at > 0 and text[at - 1] == "-"), at


def _currency_after(text: str, end: int) -> str | None:
    """The currency written after a number ("23,45 €", "12,99 EUR", "500/-")."""
    k = end + 1 if text[end : end + 1] in (" ", "\u00a0") else end
    first = text[k : k + 1]
    if first.isalpha():  # a word of at most 5 letters: "EUR", "euros", "KES"
        stop = k + 1
        while stop < len(text) and text[stop].isalpha() and stop - k < 6:
            stop += 1
        if text[stop : stop + 1].isalpha():
            return None
        token = text[k:stop]
        return token if token in _ISO_CODES else _SUFFIX_WORDS.get(token.lower())
    if first == "/" and text.startswith("/-", k):
        return "INR"
    return _SYMBOLS.get(first) if first in _SYMBOL_ENDS else None


def money_spans(text: str) -> list[Money]:
    """Every amount with a currency, in text order."""
    found: list[Money] = []
    for number in _MONEY.finditer(text):
        pre, post = number.groups()
        if pre is None and post is None:
            continue
        start, end = number.span()
        if text[end : end + 1].isalpha():
            continue  # "UAH4ATHM86" is an M-PESA code, "5GB" a data pack: not money
        if pre is None:
            currency, negative, at = None, False, start
        else:
            currency, negative, at = _currency_before(text, start, number.group())
        if currency is None:
            currency = _currency_after(text, end) if post is not None else None
            if currency is None:
                continue
        value = to_float(number.group(), currency)
        found.append((-value if negative and value is not None else value, currency, at))
    return found

