"""The builtin parser: accuracy on hand-labelled real-world SMS, and the result contract.

`data/sms_labelled.jsonl` holds one SMS a line with the fields that matter for it; a field
is right when it equals the label (amounts to the cent, names and services ignoring case).
`data/parser_golden.jsonl` holds what the parser of commit 912dcc3 (a slower one, kept as
the reference) answered for the labelled SMS, unseen synthetic ones and variants of both
(see `data/freeze_parser_golden.py`): a faster parser must answer the same, so its category
and field accuracy stay what they were.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.errors import PermanentError
from stream.sms.parser import parse_sms
from stream.sms.result import (
    CATEGORIES,
    MAX_TEXT_CHARS,
    RESULT_KEYS,
    SCHEMA_VERSION,
    validate_result,
)

DATA = Path(__file__).parent / "data" / "sms_labelled.jsonl"
LABELLED: list[dict[str, Any]] = [
    json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()
]
GOLDEN_DATA = Path(__file__).parent / "data" / "parser_golden.jsonl"
GOLDEN: list[dict[str, Any]] = [
    json.loads(line) for line in GOLDEN_DATA.read_text(encoding="utf-8").splitlines()
]
CASE_FREE = ("counterparty", "service")  # "AMAZON.COM" and "Amazon.com" name the same merchant

MIN_CATEGORY_ACCURACY = 0.95
MIN_FIELD_ACCURACY = 0.90
MIN_MESSAGE_ACCURACY = 0.85


def _same(key: str, got: object, expected: object) -> bool:
    if expected is None or got is None:
        return got is expected
    if isinstance(expected, float):
        return isinstance(got, float) and abs(got - expected) < 0.005
    if key in CASE_FREE:
        return isinstance(got, str) and isinstance(expected, str) and (
            got.casefold() == expected.casefold()
        )
    return got == expected


def _score() -> tuple[float, float, float, list[str]]:
    """(category, field-level and message-level accuracy, one line per wrong field)."""
    categories = fields = right_fields = right_messages = 0
    wrong: list[str] = []
    for row in LABELLED:
        result = parse_sms(row["body"], row["sender"])
        misses = [
            f"{key}: expected {value!r}, got {result[key]!r} in {row['body'][:60]!r}"
            for key, value in row["expected"].items()
            if not _same(key, result[key], value)
        ]
        categories += result["category"] == row["expected"]["category"]
        fields += len(row["expected"])
        right_fields += len(row["expected"]) - len(misses)
        right_messages += not misses
        wrong += misses
    total = len(LABELLED)
    return categories / total, right_fields / fields, right_messages / total, wrong


def test_labelled_set_is_large_and_varied() -> None:
    assert len(LABELLED) >= 220
    assert len({row["body"] for row in LABELLED}) == len(LABELLED)
    categories = Counter(row["expected"]["category"] for row in LABELLED)
    assert set(categories) == set(CATEGORIES)
    assert min(categories.values()) >= 20
    currencies = Counter(row["expected"].get("currency") for row in LABELLED)
    for code in ("INR", "USD", "EUR", "GBP", "KES", "NGN", "AED", "ZAR"):
        assert currencies[code] >= 2, code
    for row in LABELLED:
        assert set(row["expected"]) <= set(RESULT_KEYS), row["body"]


def test_accuracy_on_labelled_set() -> None:
    category, field, message, wrong = _score()
    summary = (
        f"category {category:.3f}, field {field:.3f}, message {message:.3f} "
        f"on {len(LABELLED)} SMS; wrong fields:\n" + "\n".join(wrong)
    )
    assert category >= MIN_CATEGORY_ACCURACY, summary
    assert field >= MIN_FIELD_ACCURACY, summary
    assert message >= MIN_MESSAGE_ACCURACY, summary


def test_golden_set_covers_every_labelled_sms() -> None:
    sets = Counter(row["set"] for row in GOLDEN)
    assert sets["labelled"] == len(LABELLED)
    assert sets["unseen"] >= 900
    assert sets["variant"] >= 900
    golden = {(row["sender"], row["body"]) for row in GOLDEN}
    assert all((row["sender"], row["body"]) in golden for row in LABELLED)


def test_outputs_equal_the_pre_rewrite_parser() -> None:
    """Every field of every golden SMS as before: accuracy on any labelled subset is unchanged."""
    changed = Counter[str]()
    wrong: list[str] = []
    for row in GOLDEN:
        before = dict.fromkeys(RESULT_KEYS) | row["result"]
        after = parse_sms(row["body"], row["sender"])
        if after != before:
            changed[row["set"]] += 1
            diff = {k: (before[k], after[k]) for k in RESULT_KEYS if before[k] != after[k]}
            wrong.append(f"{row['set']} {row['body'][:70]!r}: {diff}")
    assert not wrong, f"changed per set: {dict(changed)}\n" + "\n".join(wrong[:40])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(  # European decimals after a bank named like a currency ("N26")
            "N26: You paid € 23,45 at LIDL", {"amount": 23.45, "currency": "EUR"}, id="eu-decimal"
        ),
        pytest.param(
            "Revolut: Card payment of €1.234,56 at MEDIAMARKT",
            {"amount": 1234.56, "currency": "EUR"},
            id="eu-thousands",
        ),
        pytest.param(
            "Rs 1,00,000.00 credited to A/c XX7777. Avl Bal Rs 3,45,678.90",
            {"amount": 100000.0, "balance": 345678.9, "direction": "credit"},
            id="indian-grouping",
        ),
        pytest.param(
            "£65.00 direct debit to VODAFONE LTD taken from account ending 3210. "
            "Your balance is now -£23.10.",
            {"amount": 65.0, "balance": -23.1, "account_tail": "3210"},
            id="overdrawn",
        ),
        pytest.param(
            "INR 2,450.00 spent on ICICI Bank Card XX9003 at AMAZON. Avl Limit: INR 1,12,340.50",
            {"amount": 2450.0, "balance": None, "counterparty": "AMAZON"},
            id="limit-is-not-balance",
        ),
        pytest.param(
            "UAH4ATHM86 Confirmed. Ksh132.25 sent to PETER OTIENO 0729537506 on 1/3/24.",
            {"amount": 132.25, "currency": "KES", "reference": "UAH4ATHM86",
             "counterparty": "PETER OTIENO"},
            id="mpesa-code-looks-like-money",
        ),
        pytest.param(
            "OTP for transaction of Rs.2,500.00 at AMAZON on your Card XX1234 is 482913.",
            {"category": "otp", "otp": "482913", "amount": None},
            id="otp-quoting-amount",
        ),
        pytest.param(
            "Get Rs 500 cashback on your first UPI payment of Rs 1,000 or more! T&C apply.",
            {"category": "promotional", "amount": None},
            id="promo-with-amounts",
        ),
        pytest.param(
            "Your WhatsApp code: 123-456. Don't share this code",
            {"category": "otp", "otp": "123456", "service": "WhatsApp"},
            id="split-otp",
        ),
    ],
)
def test_tricky_formats(body: str, expected: dict[str, object]) -> None:
    result = parse_sms(body, "SENDER")
    for key, value in expected.items():
        assert _same(key, result[key], value), (key, result)


def test_personal_sender_needs_bank_evidence() -> None:
    body = "I paid Rs 200 for the auto, send me your half when you can"
    assert parse_sms(body, "+919876501234")["category"] == "other"


def test_parsing_is_deterministic_and_stateless() -> None:
    rows = [(row["body"], row["sender"]) for row in LABELLED]
    first = [parse_sms(body, sender) for body, sender in rows]
    again = [parse_sms(body, sender) for body, sender in reversed(rows)][::-1]
    assert first == again


# ------------------------------------------------------------------ the contract, by property

_KINDS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "category": (str,),
    "direction": (str, type(None)),
    "amount": (float, type(None)),
    "currency": (str, type(None)),
    "account_tail": (str, type(None)),
    "counterparty": (str, type(None)),
    "balance": (float, type(None)),
    "reference": (str, type(None)),
    "otp": (str, type(None)),
    "service": (str, type(None)),
    "expires_in_s": (int, type(None)),
}
# Pieces of real SMS, so that random text reaches the deep branches and not just "other".
_FRAGMENTS = (
    "Rs.", "INR", "₹", "$", "€", "£", "Ksh", "NGN", "R", "N", "-", "1,234.50", "23,45", "1.234,56",
    "1,00,000", "500", "0", "99999999999999", "debited", "credited", "spent at", "paid to",
    "from", "A/c", "XX1234", "****5678", "ending 4321", "Avl Bal", "balance is", "Ref No",
    "UPI:", "412345678901", "QGH7X2K9LP Confirmed.", "OTP", "is your", "code:", "G-123456",
    "valid for 10 minutes", "AWB", "out for delivery", "PNR:", "booking", "% off", "T&C",
    "Reply STOP", "@", "VPA a.b@upi", "Beneficiary:", ";", "\n", "İ", "ß", "\x00",
)
_SMS_LIKE = st.lists(
    st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=12)), max_size=30
).map(" ".join)
_ANY_TEXT = st.one_of(st.text(max_size=400), _SMS_LIKE)


def _check_contract(result: dict[str, Any]) -> None:
    assert tuple(result) == RESULT_KEYS
    for key, kinds in _KINDS.items():
        value = result[key]
        assert type(value) in kinds, (key, value)
        if isinstance(value, float):
            assert math.isfinite(value)
        if isinstance(value, str) and key != "category":
            assert 1 <= len(value) <= MAX_TEXT_CHARS, (key, value)
            assert value == value.strip(), (key, value)
            assert not any(ord(c) < 32 or ord(c) == 127 for c in value), (key, value)
    assert result["schema_version"] == SCHEMA_VERSION
    assert result["category"] in CATEGORIES
    assert result["amount"] is None or result["amount"] >= 0
    json.dumps(result, allow_nan=False)


_SENDERS = st.one_of(st.text(max_size=20), st.sampled_from(("VM-HDFCBK", "+254712345678", "MPESA")))


@given(body=_ANY_TEXT, sender=_SENDERS)
def test_any_text_parses_into_the_contract(body: str, sender: str) -> None:
    result = parse_sms(body, sender)
    _check_contract(result)
    assert validate_result(result) == result
    assert parse_sms(body, sender) == result


def test_every_labelled_result_validates_unchanged() -> None:
    for row in LABELLED:
        result = parse_sms(row["body"], row["sender"])
        _check_contract(result)
        assert validate_result(result) == result


_GOOD = parse_sms("Rs.120.00 debited from A/c XX6789 to SWIGGY. Ref 407598761234", "VM-KOTAKB")

_INVALID: dict[str, tuple[object, ...]] = {
    "schema_version": (2, "1", 1.0, True, None),
    "category": ("spam", "OTP", None, 1),
    "direction": ("in", "", 1),
    "amount": ("12.50", -1.0, math.nan, math.inf, True),
    "currency": ("inr", "RUPEE", "", 356),
    "account_tail": ("1", "12345", "ab12", 1234),
    "counterparty": ("", "   ", "x" * (MAX_TEXT_CHARS + 1), "a\x00b", 5),
    "balance": ("5", math.nan, -math.inf, False),
    "reference": ("", 412345678901, ["x"]),
    "otp": ("123", "123456789", "12ab", 123456),
    "service": ("", 1, {"name": "x"}),
    "expires_in_s": (-1, 1.5, "60", True),
}


@given(
    change=st.sampled_from(sorted(_INVALID)).flatmap(
        lambda key: st.tuples(st.just(key), st.sampled_from(_INVALID[key]))
    )
)
def test_validate_rejects_a_wrong_value(change: tuple[str, object]) -> None:
    key, value = change
    with pytest.raises(PermanentError) as caught:
        validate_result({**_GOOD, key: value})
    assert caught.value.reason == "invalid_result"


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param([_GOOD], id="not-an-object"),
        pytest.param("ok", id="a-string"),
        pytest.param(None, id="null"),
        pytest.param({**_GOOD, "confidence": 0.9}, id="unknown-key"),
        pytest.param({k: v for k, v in _GOOD.items() if k != "otp"}, id="missing-key"),
        pytest.param({}, id="empty"),
    ],
)
def test_validate_rejects_wrong_shapes(obj: object) -> None:
    with pytest.raises(PermanentError) as caught:
        validate_result(obj)
    assert caught.value.reason == "invalid_result"


def test_validate_normalises() -> None:
    raw = {**_GOOD, "amount": 120, "balance": -5.004, "counterparty": "  SWIGGY ",
           "expires_in_s": None}
    shuffled = dict(reversed(list(raw.items())))
    result = validate_result(shuffled)
    assert tuple(result) == RESULT_KEYS
    assert result["amount"] == 120.0
    assert isinstance(result["amount"], float)
    assert result["balance"] == -5.0
    assert result["counterparty"] == "SWIGGY"
