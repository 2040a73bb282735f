"""One-time codes: the words that signal one, the code, how long it is valid, whom it is for."""

from __future__ import annotations

import re
from typing import Any

from stream.sms.names import brand, prefix_brand, signature_brand

__all__ = ["HANDOVER_CODE", "OTP_STRONG", "OTP_WEAK", "otp_code", "otp_fields"]

OTP_STRONG = (
    "otp", "one time", "one-time", "verification", "verify", "passcode", "security code",
    "login code", "confirmation code", "authentication code", "código", "codigo", "kode",
    "bestätigungscode",
)
OTP_WEAK = ("code", "pin", "password", "token")

# A code to hand over ("Share OTP 4412 to start the ride", "OTP for delivery: 4321") is part
# of a booking or delivery notice, unlike a login code one must "never share".
HANDOVER_CODE = re.compile(  # each alternative starts with a letter: literal-led
    r"s(?<!not s)(?<!never s)(?<!n't s)hare (?:the |this )?(?:otp|code|pin)"
    r"|otp (?:to start|for (?:the |your )?(?:ride|trip|delivery|pickup))"
    r"|pin (?:to start|for (?:the |your )?(?:ride|trip|delivery|pickup))"
)

# A code is "123-456" or 4-8 digits; written as its first digit, then the rest, so that a
# pattern starting with it is literal-led (see `stream.sms.parser`).
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

_SENDER_ID = re.compile(r"(?:[A-Z]{2}-)?(?P<id>[A-Za-z][A-Za-z0-9]{2,10})(?:-[A-Z])?")


def otp_code(text: str) -> str | None:
    """The code an OTP message carries, separators dropped; None when there is none."""
    for pattern in _OTP_PATTERNS:
        match = pattern.search(text)
        if match is not None:
            return match["code"].replace("-", "").replace(" ", "")
    return None


def otp_fields(result: dict[str, Any], text: str, low: str, code: str, sender: str) -> None:
    """Fill `otp`, `expires_in_s` and `service` (whom the code is for, else who sent it)."""
    result["otp"] = code
    expiry = _EXPIRY.search(low)
    if expiry is not None:
        result["expires_in_s"] = int(expiry["n"]) * _UNIT_SECONDS[expiry["unit"][0]]
    if "G-" + code in text:
        result["service"] = "Google"
        return
    for pattern in (_SERVICE_OWNED, _SERVICE_FOR):
        for match in pattern.finditer(text):
            service = brand(match["name"])
            if service is not None:
                result["service"] = service
                return
    sender_id = _SENDER_ID.fullmatch(sender.strip())
    result["service"] = (
        prefix_brand(text) or signature_brand(text) or (sender_id["id"] if sender_id else None)
    )

