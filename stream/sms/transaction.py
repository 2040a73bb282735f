"""Money movements: the words that signal a transaction, and its amount, direction, balance,
account tail, counterparty and reference."""

from __future__ import annotations

import re
from typing import Any

from stream.sms.money import Money, money_spans, to_float
from stream.sms.names import clean_text

__all__ = ["DEBIT_CREDIT_WORD", "TXN_STRONG", "TXN_WEAK", "transaction_fields"]

_BALANCE_WORDS = ("bal", "avl", "avail", "aval", "saldo", "solde", "kontostand")
_BALANCE_GAP = 32
"""How far after a balance keyword its amount may start ("New M-PESA balance is Ksh...")."""
_NOT_BALANCE = ("lim", "lmt")  # "Avl Limit: INR 1,12,340.50" is credit headroom, not money held
_NOT_AMOUNT = re.compile("cost|fee|charges|limit|lmt|transact within")
_NOT_AMOUNT_REACH = 16  # how far before an amount those words make it a fee or a limit

TXN_STRONG = (
    "debited", "credited", "spent", "withdr", "deposited", "deducted", "charged", "transferred",
    "txn", "paid to", "sent to", "paid you", "paid into", "you paid", "you sent", "have sent",
    "you received", "have received", "you've received", "used for", "used at",
    "direct deposit", "zahlung", "abgebucht", "paiement", "compra", "pagamento", "betaald",
)
DEBIT_CREDIT_WORD = re.compile(  # "\bdr", "\bdebit", "\bcr", "\bcredit", literal-led
    r"(?:d(?<=\bd)(?:r|ebit)|c(?<=\bc)(?:r|redit))\b(?!\s*(?:card|limit|score))"
)
TXN_WEAK = (
    "paid", "sent", "received", "payment", "purchase", "transaction", "refund", "bought",
    "deposit", "charge", "using your",
)

_INDIAN_SENDER = re.compile(r"[A-Z]{2}-[A-Za-z0-9]{3,}")  # DLT headers such as "VM-HDFCBK"

_CREDIT_CUES = frozenset((
    "payment received", "paid you", "sent you", "paid into", "credited", "credit", "cr",
    "received", "deposit", "refund", "revers", "cashback", "gutschrift", "reçu", "recibido",
    "abono", "accredito",
))
# The first cue in the body decides: the credit cues, then the debit ones, each starting
# with a letter (literal-led, see `stream.sms.parser`); which kind matched is read from
# the matched text.
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
_REF_WORD = re.compile(  # each alternative starts with a letter: literal-led
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
    name = clean_text(" ".join(kept))
    if name is None or name.split(" ", 1)[0].lower() in _PARTY_STOP:
        return None
    if _DIGIT.search(name, 0, 12):  # "N2,000.00 for DSTV" is an amount, not a payee
        spans = money_spans(name[:24])
        if spans and spans[0][2] == 0:
            return None
    return name


def _balance(low: str, spans: list[Money]) -> tuple[float | None, int]:
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


def _amount(low: str, spans: list[Money], skip: int) -> tuple[float | None, str | None]:
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
            return clean_text(paired["cp"])
    if "paid you" in low or "sent you" in low:
        payer = _PAID_YOU.search(text)
        if payer is not None:
            return clean_text(payer["cp"])
    words = _CREDIT_WORD if direction == "credit" else _DEBIT_WORD
    for word in words.finditer(low):
        name = _name_at(text, word.end())
        if name is not None:
            return name
    return None


def transaction_fields(
    result: dict[str, Any],
    text: str,
    low: str,
    sender: str,
    spans: list[Money],
    bare: re.Match[str] | None,
) -> None:
    """Fill the money fields of a transaction `result`: the amount (the first one that is
    neither the balance nor a fee or limit, or `bare`, SBI's amount without a currency),
    direction, balance, account tail, counterparty and reference."""
    balance, balance_at = _balance(low, spans)
    if bare is not None:
        result["amount"] = to_float(bare["num"], None)
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

