"""Names in an SMS: cleaning free text, and the brand a platform puts in front or signs with.

Shared by the OTP fields (the service a code is for) and the delivery and booking fields
(the carrier, airline or platform).
"""

from __future__ import annotations

import re

from stream.sms.result import MAX_TEXT_CHARS

__all__ = ["brand", "clean_text", "prefix_brand", "signature_brand"]

_PREFIX = re.compile(
    r"\s*(?:\[(?P<b>[^\]\n]{2,30})\]|(?P<p>[A-Za-z][\w&'\u2019+. -]{0,30}?)\s?:\s)"
)
_SIGNATURE = re.compile(r"[-\u2013]\s*(?P<name>[A-Za-z][\w&'\u2019+. ]{1,30}?)\s*$")
_SIGNATURE_REACH = 36  # the dash of a signature is this close to the end

_NOT_A_NAME = frozenset((
    "otp", "one", "verification", "security", "login", "code", "pin", "your", "the", "this",
    "do", "dear", "never", "please", "valid", "it", "use", "enter", "hi", "hello", "alert",
    "update", "reminder", "info", "note", "important", "ref", "txn", "acct", "amt", "debit",
    "credit", "desc", "date", "bal", "ac", "acc", "pnr", "tin", "urgent", "confirmed", "inr",
    "rs", "sms", "yay", "good", "welcome", "kode", "delivered", "shipped", "dispatched",
    "arriving", "cancelled",
))
_NAME_SUFFIXES = (" code", " otp", " verification", " login", " account", " app")

_CONTROL_TO_SPACE = dict.fromkeys((*range(32), 127), " ")


def clean_text(text: str | None) -> str | None:
    """Collapse whitespace and control characters, trim punctuation; None if nothing
    name-like is left. Every free-text field passes through here."""
    if text is None:
        return None
    cleaned = " ".join(text.translate(_CONTROL_TO_SPACE).split()).strip(" .,;:-\u2013*'\"")
    cleaned = cleaned[:MAX_TEXT_CHARS].rstrip()
    return cleaned if any(c.isalpha() for c in cleaned) else None


def brand(name: str | None) -> str | None:
    """A service or company name, minus the words SMS wrap around it ("Telegram code")."""
    name = clean_text(name)
    if name is None:
        return None
    lowered = name.lower()
    for suffix in _NAME_SUFFIXES:
        if lowered.endswith(suffix):
            name, lowered = name[: -len(suffix)], lowered[: -len(suffix)]
    if lowered.split(" ", 1)[0] in _NOT_A_NAME:
        return None
    return clean_text(name)


def prefix_brand(text: str) -> str | None:
    """The "Brand:" or "[Brand]" most platforms start their SMS with."""
    match = _PREFIX.match(text)
    return brand(match["b"] or match["p"]) if match else None


def signature_brand(text: str) -> str | None:
    """The "- Brand" or "-Team Brand" some SMS end with."""
    dash = max(text.rfind("-", -_SIGNATURE_REACH), text.rfind("\u2013", -_SIGNATURE_REACH))
    match = _SIGNATURE.match(text, dash) if dash >= 0 else None
    return brand(match["name"]) if match else None

