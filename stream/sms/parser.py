"""The builtin SMS parser: one SMS in, one flat, uniform, JSON-ready result out.

`parse_sms` is the hot path of the `builtin` processor, so it is pure, deterministic and
offline, and built for speed: one pass finds every amount (a digit-led regex the engine can
skip through, then a dictionary look-up of the few characters around each number), keyword
checks are substring tests on the lower-cased body, and the expensive field patterns run
only for the category they belong to. It never raises on any text.

Contract (schema_version 1). Every result has exactly `RESULT_KEYS`, in that order; a field
that does not apply is None, so stored documents are uniform:

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
first MAX_SCAN_CHARS characters of a body are read.
`validate_result` holds results that come back from the parse API to the same contract.
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
    "parse_sms",
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

# ------------------------------------------------------------------ amounts and currencies

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
_BARE_AMOUNT = re.compile(  # SBI's "debited by 250.0": an amount with no currency at all
    r"(?:debited|credited) (?:by|for|with) (?P<num>\d{1,12}(?:[.,]\d{1,2})?)(?![\d,.])"
)
_BALANCE_WORDS = ("bal", "avl", "avail", "aval", "saldo", "solde", "kontostand")
_BALANCE_GAP = 32
"""How far after a balance keyword its amount may start ("New M-PESA balance is Ksh...")."""
_NOT_BALANCE = ("lim", "lmt")  # "Avl Limit: INR 1,12,340.50" is credit headroom, not money held
_NOT_AMOUNT = re.compile("cost|fee|charges|limit|lmt|transact within")
_NOT_AMOUNT_REACH = 16  # how far before an amount those words make it a fee or a limit

_Money = tuple[float | None, str, int]
"""(value, ISO currency, offset where the currency or number starts)."""


def _lower(text: str) -> str:
    """Lower-case with offsets kept: a few characters (such as "İ") lower-case to two."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _to_float(num: str, currency: str | None) -> float | None:
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


def _money_spans(text: str) -> list[_Money]:
    """Every amount with a currency, in text order."""
    found: list[_Money] = []
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
        value = _to_float(number.group(), currency)
        found.append((-value if negative and value is not None else value, currency, at))
    return found


# ------------------------------------------------------------------ category signals
# _LITERAL_LED: a pattern whose every alternative starts with a literal character (or that
# starts with one character class) lets the regex engine skip, in C, to the positions where
# a match can start; one that starts with a look-around or "\b" is tried at every position.
# So "\bcr" is written "c(?<=\bc)r" and "(?<!not )share" "s(?<!not s)hare": same matches.
# Substring tests on the lower-cased body: a few dozen cost about as much as one regex scan.

_OTP_STRONG = (
    "otp", "one time", "one-time", "verification", "verify", "passcode", "security code",
    "login code", "confirmation code", "authentication code", "código", "codigo", "kode",
    "bestätigungscode",
)
_OTP_WEAK = ("code", "pin", "password", "token")
_DELIVERY = (
    "out for delivery", "shipped", "dispatched", "delivered", "in transit", "awb", "tracking",
    "shipment", "consignment", "courier", "parcel", "package", "arriving today",
    "attempted delivery", "delivery partner", "delivery executive", "on the way", "picked up",
)
_BOOKING = (
    "pnr", "booking", "booked", "reservation", "check-in", "checkin", "boarding", "ticket",
    "flight", "your ride", "driver", "your cab", "itinerary", "appointment",
    "confirmation number", "confirmation #", "your trip", "table for", "hotel", "seat",
    "pickup point", "is arriving", "arriving now", " ride",
)
# A code to hand over ("Share OTP 4412 to start the ride", "OTP for delivery: 4321") is part
# of a booking or delivery notice, unlike a login code one must "never share".


def _any_of(words: tuple[str, ...]) -> re.Pattern[str]:
    """A pattern that finds whether any of `words` occurs: one scan, one alternative per first
    character (see _LITERAL_LED), instead of one substring test per word."""
    rests: dict[str, list[str]] = {}
    for word in words:
        rests.setdefault(word[0], []).append(re.escape(word[1:]))
    return re.compile(
        "|".join(f"{re.escape(first)}(?:{'|'.join(rest)})" for first, rest in rests.items())
    )

_HANDOVER_CODE = re.compile(  # each alternative starts with a letter: see _LITERAL_LED
    r"s(?<!not s)(?<!never s)(?<!n't s)hare (?:the |this )?(?:otp|code|pin)"
    r"|otp (?:to start|for (?:the |your )?(?:ride|trip|delivery|pickup))"
    r"|pin (?:to start|for (?:the |your )?(?:ride|trip|delivery|pickup))"
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
_TXN_STRONG = (
    "debited", "credited", "spent", "withdr", "deposited", "deducted", "charged", "transferred",
    "txn", "paid to", "sent to", "paid you", "paid into", "you paid", "you sent", "have sent",
    "you received", "have received", "you've received", "used for", "used at",
    "direct deposit", "zahlung", "abgebucht", "paiement", "compra", "pagamento", "betaald",
)
_DEBIT_CREDIT_WORD = re.compile(  # "\bdr", "\bdebit", "\bcr", "\bcredit", literal-led
    r"(?:d(?<=\bd)(?:r|ebit)|c(?<=\bc)(?:r|redit))\b(?!\s*(?:card|limit|score))"
)
_TXN_WEAK = (
    "paid", "sent", "received", "payment", "purchase", "transaction", "refund", "bought",
    "deposit", "charge", "using your",
)
_PERSONAL_SENDER = re.compile(r"\+?\d[\d ]{7,}")
_INDIAN_SENDER = re.compile(r"[A-Z]{2}-[A-Za-z0-9]{3,}")  # DLT headers such as "VM-HDFCBK"

# ------------------------------------------------------------------ transaction fields

_CREDIT_CUES = frozenset((
    "payment received", "paid you", "sent you", "paid into", "credited", "credit", "cr",
    "received", "deposit", "refund", "revers", "cashback", "gutschrift", "reçu", "recibido",
    "abono", "accredito",
))
# The first cue in the body decides: the credit cues, then the debit ones, each starting
# with a letter (see _LITERAL_LED); which kind matched is read from the matched text.
_DIRECTION = re.compile(
    r"payment received|paid you|sent you|paid into|credited"
    r"|credit(?!\s*(?:card|limit|score))|c(?<=\bc)r\b|received|deposit|refund|revers|cashback"
    r"|gutschrift|reçu|recibido|abono|accredito"
    r"|debit|d(?<=\bd)r\b|spent|paid|payment|sent|charge|withdr|purchase|deducted"
    r"|transferred|bought|used for|zahlung|abgebucht|paiement|achat|compra|pago|cargo"
    r"|pagamento|addebito|betaald"
)
# Three ways to state the tail, each searched on the lower-cased body.
_MASKED_TAIL = re.compile(r"[x*•][x*•]* ?(\d{2,4})(?![\da-z])")
_ACCOUNT_TAIL = re.compile(
    r"(?:a/c|acct|acc|account|card|ac)(?![a-wyz])\s*(?:no\b)?\.?\s*[:.]?\s*[x*]*"
    r"(\d{2,4})(?![\dx*a-z])"
)
_ENDING_TAIL = re.compile(r"(?:ending|ends with|final)(?: in| with)?\s*:?\s*(\d{2,4})(?!\d)")
_REF_TAIL = r"\.?\s*(?:no|number|id|#)?\.?\s*[:#-]?\s*"
_REF_WORD = re.compile(  # each alternative starts with a letter: see _LITERAL_LED
    "|".join(rf"{word}{_REF_TAIL}" for word in (
        r"ref(?:erence)?", "rrn", "utr", r"txn\s*id", r"transaction\s*id"
    )) + r"|upi[:/]\s*(?:p2[am]/|cr/|dr/)?"
)
_REF_TOKEN = re.compile(r"(?=[A-Z]*\d)[A-Z0-9]{4,30}\b")
_MPESA_CODE = re.compile(r"\s*(?P<ref>(?=[A-Z]*\d)(?=\d*[A-Z])[A-Z0-9]{10})\s+Confirmed")
_VPA = re.compile(r"(?<![\w.])[\w.\-]{2,64}@[a-z][a-z0-9]{1,20}\b")
_UPI_PATH = re.compile(r"upi/(?:p2[am]|cr|dr)/\d+/")
_PAIRED_CREDIT = re.compile(r";\s*(?P<cp>[A-Z][A-Z0-9 .&'-]{1,40}?)\s+credited")
_PAID_YOU = re.compile(
    r"(?P<cp>[A-Z][\w.'&-]*(?:[ ][A-Z][\w.'&-]*){0,3})\s+(?:paid|sent)\s+you\b"
)
_DEBIT_WORD = re.compile(  # "[\s(]at ", "[\s(]to vpa "... or "@": one leading class
    r"[\s(@](?:(?<=@)\s*|(?:at|to|with|bei|chez|en|presso|aan)\s+(?:vpa\s+)?)"
)
_CREDIT_WORD = re.compile(r"[\s(](?:from|by)\s+")
_NAME_CHUNK = re.compile(r"[^,;:()|!\n]{1,80}")
_DIGIT = re.compile(r"\d")
# A name ends at a connecting word: any case for these, lower case only for _END_LOWER
# ("AMAZON PAY IN E COMMERC" keeps its "IN").
_END_ANY = frozenset((
    "on", "at", "from", "to", "into", "via", "using", "ref", "refno", "reference", "txn", "upi",
    "avl", "avail", "available", "bal", "balance", "dated", "info", "utr", "rrn", "a/c", "acct",
    "-", "\u2013",
))
_END_LOWER = frozenset((
    "in", "is", "was", "has", "have", "had", "and", "for", "of", "with", "your", "not", "new",
    "if", "le", "mit", "con", "taken", "will", "were",
))
_PARTY_STOP = frozenset((
    "your", "my", "the", "a", "an", "debit", "credit", "card", "a/c", "ac", "acct",
    "account", "wallet", "neft", "imps", "rtgs", "upi", "vpa", "transfer", "atm", "you",
    "self", "bank",
))

# ------------------------------------------------------------------ otp fields

# A code is "123-456" or 4-8 digits; written as its first digit, then the rest, so that a
# pattern starting with it is literal-led (see _LITERAL_LED).
_CODE_REST = r"(?:\d{2}[- ]\d{3}|\d{3,7})"
_CODE_END = r"(?![\d.,]?\d)(?!\s*(?i:s|secs?|seconds?|mins?|minutes?|hrs?|hours?)\b)"
_CODE = rf"(?P<code>\d{_CODE_REST}){_CODE_END}"
_OTP_PATTERNS = (
    re.compile(rf"G(?<=\bG)-{_CODE}"),
    re.compile(rf"(?P<code>\d(?<![\w*•.,/-]\d){_CODE_REST}){_CODE_END}\s+(?i:is\b)"),
    re.compile(  # otp|code|password|passcode|pin|código|kode|token, any case ("\u212a" is "K")
        r"[CcKkOoPpTt\u212a](?i:(?<=o)tp|(?<=c)ode|(?<=p)assword|(?<=p)asscode|(?<=p)in"
        r"|(?<=c)[oó]digo|(?<=k)ode|(?<=t)oken)\b[^\d\n]{0,40}?"
        rf"(?:(?i:\bis\b|\best\b|\bes\b|adalah|lautet)|[:\-\u2013]{{1,2}})?\s*:?\s*{_CODE}"
    ),
    re.compile(rf"(?i:\b(?:use|enter)\s+){_CODE}"),
    re.compile(rf"(?i:\bis)\s*:?\s*{_CODE}"),
)
_EXPIRY = re.compile(
    r"(?:valid|expires?|expiring|expiry|validity)\b[^\d\n]{0,20}?(?P<n>\d{1,4})\s*"
    r"(?P<unit>seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b"
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
_WORD = r"[\w&'\u2019+-]*(?:\.[\w&'\u2019+-]+)*"
_BRAND = rf"(?P<name>[A-Z]{_WORD}(?:[ ][A-Z]{_WORD}){{0,3}})"
_SERVICE_OWNED = re.compile(  # "is your Google verification code", "Your CRED login OTP"
    rf"(?:i(?<=\bi)s|a(?<=\ba)s|Y(?<=\bY)our|y(?<=\by)our)\s+(?:your\s+)?{_BRAND}\s+(?:account\s+)?"
    r"(?:(?i:verification|confirmation|security|login|sign-in|one-time|access)\s+)?"
    r"(?i:code|otp|passcode|password|pin)\b"
)
_SERVICE_FOR = re.compile(  # "to log in to Swiggy", "for SBI Net Banking", "on Zomato"
    r"(?:f(?<=\bf)or|t(?<=\bt)o|o(?<=\bo)n|i(?<=\bi)nto|a(?<=\ba)t|w(?<=\bw)ith)\s+"
    r"(?i:(?:log\s?in|sign\s?in)\s+(?:to\s+)?|login\s+to\s+|your\s+)?"
    rf"{_BRAND}"
)
_PREFIX = re.compile(
    r"\s*(?:\[(?P<b>[^\]\n]{2,30})\]|(?P<p>[A-Za-z][\w&'\u2019+. -]{0,30}?)\s?:\s)"
)
_SIGNATURE = re.compile(r"[-\u2013]\s*(?P<name>[A-Za-z][\w&'\u2019+. ]{1,30}?)\s*$")
_SIGNATURE_REACH = 36  # the dash of a signature is this close to the end
_SENDER_ID = re.compile(r"(?:[A-Z]{2}-)?(?P<id>[A-Za-z][A-Za-z0-9]{2,10})(?:-[A-Z])?")
_NOT_A_NAME = frozenset((
    "otp", "one", "verification", "security", "login", "code", "pin", "your", "the", "this",
    "do", "dear", "never", "please", "valid", "it", "use", "enter", "hi", "hello", "alert",
    "update", "reminder", "info", "note", "important", "ref", "txn", "acct", "amt", "debit",
    "credit", "desc", "date", "bal", "ac", "acc", "pnr", "tin", "urgent", "confirmed", "inr",
    "rs", "sms", "yay", "good", "welcome", "kode", "delivered", "shipped", "dispatched",
    "arriving", "cancelled",
))
_NAME_SUFFIXES = (" code", " otp", " verification", " login", " account", " app")

# ------------------------------------------------------------------ delivery and booking fields

_ORDER_WORD = re.compile(  # searched on the lower-cased body; the number itself on the body
    r"(?:awb|tracking(?:\s+(?:number|no|id|code))?|order(?:\s+(?:id|no|number))?"
    r"|consignment|shipment|parcel|package|item|article|pnr|crn|tin"
    r"|booking(?:\s+(?:id|ref(?:erence)?|no|number|code))?"
    r"|reservation(?:\s+(?:number|no|code|id))?|confirmation(?:\s+(?:number|no|code))?"
    r"|ticket(?:\s+(?:no|number|id))?|ref(?:erence)?)\b"
    r"\.?\s*(?:no\b|number|id)?\.?\s*#?\s*[:.\-]?\s*"
)
_ORDER_TOKEN = re.compile(r"[A-Z0-9](?:[A-Z0-9]|-(?=[A-Z0-9])){3,29}(?![\w-])")
_LOCATOR_WORDS = ("pnr", "boo", "res", "con", "ref")  # a 6-letter airline PNR has no digit
_KNOWN_BRANDS = re.compile(
    r"\b(?:Blue Dart|India Post|DTDC|Delhivery|Ekart|XpressBees|Shadowfax|DHL|FedEx|UPS|USPS"
    r"|Royal Mail|Evri|Parcelforce|Aramex|Amazon|Flipkart|Myntra|Meesho|Jumia|noon|Swiggy"
    r"|Zomato|Glovo|IndiGo|Air India|Vistara|Emirates|Ryanair|Kenya Airways|Qatar Airways"
    r"|Uber|Ola|Bolt|Lyft|Airbnb|Booking\.com|OYO|MakeMyTrip|Agoda|Expedia|IRCTC|redBus)\b"
)


# ------------------------------------------------------------------ helpers


_CONTROL_TO_SPACE = dict.fromkeys((*range(32), 127), " ")


def _clean(text: str | None) -> str | None:
    """Collapse whitespace and control characters, trim punctuation; None if nothing
    name-like is left. Every free-text field passes through here."""
    if text is None:
        return None
    cleaned = " ".join(text.translate(_CONTROL_TO_SPACE).split()).strip(" .,;:-\u2013*'\"")
    cleaned = cleaned[:MAX_TEXT_CHARS].rstrip()
    return cleaned if any(c.isalpha() for c in cleaned) else None


def _name_at(text: str, pos: int) -> str | None:
    """The merchant or person name starting at `pos`, up to the word that ends it."""
    chunk = _NAME_CHUNK.match(text, pos)
    if chunk is None:
        return None
    words = chunk.group().split()
    kept: list[str] = []
    for i, word in enumerate(words):
        lowered = word.lower()
        if kept and (
            lowered in _END_ANY
            or (word.islower() and lowered in _END_LOWER)
            or (lowered == "account" and i + 1 < len(words)  # "account ending", "account XX12"
                and words[i + 1][0].lower() in "xen*")
            or ((word[0].isdigit() or word[0] == "+") and (len(word) >= 6 or "/" in word))
        ):
            break
        if word.endswith(".") and "." not in word[:-1]:
            kept.append(word[:-1])
            break
        kept.append(word)
    name = _clean(" ".join(kept))
    if name is None or name.split(" ", 1)[0].lower() in _PARTY_STOP:
        return None
    if _DIGIT.search(name, 0, 12):  # "N2,000.00 for DSTV" is an amount, not a payee
        spans = _money_spans(name[:24])
        if spans and spans[0][2] == 0:
            return None
    return name


def _brand(name: str | None) -> str | None:
    """A service or company name, minus the words SMS wrap around it ("Telegram code")."""
    name = _clean(name)
    if name is None:
        return None
    lowered = name.lower()
    for suffix in _NAME_SUFFIXES:
        if lowered.endswith(suffix):
            name, lowered = name[: -len(suffix)], lowered[: -len(suffix)]
    if lowered.split(" ", 1)[0] in _NOT_A_NAME:
        return None
    return _clean(name)


def _prefix_brand(text: str) -> str | None:
    """The "Brand:" or "[Brand]" most platforms start their SMS with."""
    match = _PREFIX.match(text)
    return _brand(match["b"] or match["p"]) if match else None


def _signature_brand(text: str) -> str | None:
    """The "- Brand" or "-Team Brand" some SMS end with."""
    dash = max(text.rfind("-", -_SIGNATURE_REACH), text.rfind("\u2013", -_SIGNATURE_REACH))
    match = _SIGNATURE.match(text, dash) if dash >= 0 else None
    return _brand(match["name"]) if match else None


def _hits(low: str, keywords: tuple[str, ...]) -> int:
    return sum(map(low.__contains__, keywords))


def _mentions(low: str, keywords: tuple[str, ...]) -> bool:
    return any(map(low.__contains__, keywords))


# ------------------------------------------------------------------ per-category extraction


def _otp_code(text: str) -> str | None:
    for pattern in _OTP_PATTERNS:
        match = pattern.search(text)
        if match is not None:
            return match["code"].replace("-", "").replace(" ", "")
    return None


def _otp_fields(result: dict[str, Any], text: str, low: str, code: str, sender: str) -> None:
    result["otp"] = code
    expiry = _EXPIRY.search(low)
    if expiry is not None:
        result["expires_in_s"] = int(expiry["n"]) * _UNIT_SECONDS[expiry["unit"][0]]
    if "G-" + code in text:
        result["service"] = "Google"
        return
    for pattern in (_SERVICE_OWNED, _SERVICE_FOR):
        for match in pattern.finditer(text):
            service = _brand(match["name"])
            if service is not None:
                result["service"] = service
                return
    sender_id = _SENDER_ID.fullmatch(sender.strip())
    result["service"] = (
        _prefix_brand(text) or _signature_brand(text) or (sender_id["id"] if sender_id else None)
    )


def _balance(low: str, spans: list[_Money]) -> tuple[float | None, int]:
    """The stated balance and the offset of its amount (-1 when there is none)."""
    ends = []
    for word in _BALANCE_WORDS:
        at = low.find(word)
        while at >= 0:
            if at == 0 or not low[at - 1].isalpha() or low[at - 3 : at] == "avl":
                ends.append(at + len(word))
            at = low.find(word, at + 1)
    for end in sorted(ends):
        for value, _, start in spans:
            if end <= start <= end + _BALANCE_GAP:
                gap = low[end:start]
                if not any(word in gap for word in _NOT_BALANCE):
                    return value, start
                break
    return None, -1


def _amount(low: str, spans: list[_Money], skip: int) -> tuple[float | None, str | None]:
    for value, currency, start in spans:
        if start == skip or _NOT_AMOUNT.search(low, max(0, start - _NOT_AMOUNT_REACH), start):
            continue
        return (abs(value) if value is not None else None), currency
    return None, None


def _account_tail(low: str) -> str | None:
    """The earliest of a masked number, an "A/c 1234" and a "card ending 1234"."""
    best: tuple[int, str] | None = None
    for mask in _MASKED_TAIL.finditer(low):
        # A run of two or more mask characters is a mask ("XX1234", "NL**INGB***0123");
        # a single "x" must not be glued to a word ("A/cX4321", an M-PESA code "QGH7X2K9LP").
        start = before = mask.start()
        while before > max(start - 6, 0) and low[before - 1].isdigit():  # "012****345"
            before -= 1
        if low[start + 1] in "x*•" or before == 0 or not low[before - 1].isalnum():
            best = (start, mask[1])
            break
    for pattern in (_ACCOUNT_TAIL, _ENDING_TAIL):
        match = pattern.search(low)
        if match is not None and (best is None or match.start() < best[0]):
            best = (match.start(), match[1])
    return best[1] if best else None


def _reference(text: str, low: str) -> str | None:
    mpesa = _MPESA_CODE.match(text)
    if mpesa is not None:
        return mpesa["ref"]
    for word in _REF_WORD.finditer(low):
        token = _REF_TOKEN.match(text, word.end())
        if token is not None:
            return token.group()
    return None


def _counterparty(text: str, low: str, direction: str) -> str | None:
    if "@" in text:
        vpa = _VPA.search(text)
        if vpa is not None:
            return vpa.group()
    if "upi/" in low:
        path = _UPI_PATH.search(low)
        if path is not None and (name := _name_at(text.replace("/", " "), path.end())):
            return name
    if "beneficiary" in low and (name := _name_at(text, low.find("beneficiary") + 12)):
        return name
    if ";" in text and "credited" in low:
        paired = _PAIRED_CREDIT.search(text)
        if paired is not None:
            return _clean(paired["cp"])
    if "paid you" in low or "sent you" in low:
        payer = _PAID_YOU.search(text)
        if payer is not None:
            return _clean(payer["cp"])
    words = _CREDIT_WORD if direction == "credit" else _DEBIT_WORD
    for word in words.finditer(low):
        name = _name_at(text, word.end())
        if name is not None:
            return name
    return None


def _transaction_fields(
    result: dict[str, Any],
    text: str,
    low: str,
    sender: str,
    spans: list[_Money],
    bare: re.Match[str] | None,
) -> None:
    balance, balance_at = _balance(low, spans)
    if bare is not None:
        result["amount"] = _to_float(bare["num"], None)
        indian = "upi" in low or _INDIAN_SENDER.match(sender)
        result["currency"] = "INR" if indian else None
    else:
        result["amount"], result["currency"] = _amount(low, spans, balance_at)
    direction = _DIRECTION.search(low)
    result["direction"] = (
        "credit" if direction and direction.group() in _CREDIT_CUES else "debit"
    )
    result["balance"] = balance
    result["account_tail"] = _account_tail(low)
    result["counterparty"] = _counterparty(text, low, result["direction"])
    result["reference"] = _reference(text, low)


def _order_fields(result: dict[str, Any], text: str, low: str) -> None:
    for word in _ORDER_WORD.finditer(low):
        token = _ORDER_TOKEN.match(text, word.end())
        if token is None:
            continue
        ref = token.group()
        if any(c.isdigit() for c in ref) or (len(ref) == 6 and word[0][:3] in _LOCATOR_WORDS):
            result["reference"] = ref
            break
    brand = _KNOWN_BRANDS.search(text)
    result["counterparty"] = (
        _prefix_brand(text) or (brand.group() if brand else None) or _signature_brand(text)
    )


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
        or _mentions(low, _BOOKING)
        or _mentions(low, _DELIVERY)
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
    spans = _money_spans(text)

    # An OTP message may quote an amount ("OTP for INR 1,999.00 txn"), so it is decided
    # first; a bare "code"/"PIN" yields to booking, delivery and money signals.
    # Decided on words first: the five code patterns cost more than the word tests.
    strong_otp = _mentions(low, _OTP_STRONG)
    if (
        (strong_otp or (not spans and _mentions(low, _OTP_WEAK)))
        and not _mentions(low, _DELIVERY)
        and not (
            (not strong_otp or _HANDOVER_CODE.search(low)) and _mentions(low, _BOOKING)
        )
        and (code := _otp_code(text)) is not None
    ):
        result = _empty("otp")
        _otp_fields(result, text, low, code, sender)
        return result

    bare = None if spans else _BARE_AMOUNT.search(low)
    if spans or bare is not None:
        # "£3.20 at Greggs. Your balance is £57.44" names no verb, but states a balance.
        strong = _mentions(low, _TXN_STRONG) or bool(_DEBIT_CREDIT_WORD.search(low))
        if strong or _mentions(low, _TXN_WEAK) or (len(spans) > 1 and "bal" in low):
            result = _empty("transaction")
            _transaction_fields(result, text, low, sender, spans, bare)
            if _is_transaction(result, low, sender, strong=strong):
                return result

    promo = _hits(low, _PROMO) if _PROMO_ANY.search(low) else 0
    booking = _hits(low, _BOOKING)
    delivery = _hits(low, _DELIVERY)
    if promo >= 2 or (promo and not (booking or delivery)):
        return _empty("promotional")
    if booking or delivery:
        result = _empty("booking" if booking > delivery else "delivery")
        _order_fields(result, text, low)
        # Platforms send from IDs and short codes; "Did you get the tickets?" from a
        # person's number is a conversation unless it carries a booking or tracking number.
        if result["reference"] is not None or not _PERSONAL_SENDER.fullmatch(sender):
            return result
    return _empty("other")


# ------------------------------------------------------------------ validation


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
