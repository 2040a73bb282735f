"""What every template draws from: merchants, names, apps, phone numbers, amounts, and the
ways SMS write money and dates."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "APPS",
    "MERCHANTS",
    "MONTHS",
    "NAMES",
    "Made",
    "Template",
    "clock",
    "dd_mon_yy",
    "ddmmyy",
    "digits",
    "dmy_short",
    "en",
    "eu",
    "letters",
    "money",
    "mpesa_code",
    "phone_number",
]


Made = tuple[str, str, dict[str, Any]]
"""(sender, body, the parse-result fields the template put in, besides its category)."""


@dataclass(frozen=True, slots=True)
class Template:
    """One kind of SMS: its category, the region it comes from (the recipient's number is
    drawn there), its weight in the mix, and what makes one."""

    category: str
    region: str
    weight: float
    make: Callable[[random.Random, datetime], Made]


MERCHANTS = {
    "IN": ("SWIGGY", "ZOMATO", "BIGBASKET", "RELIANCE DIGITAL", "CROMA", "MYNTRA", "DMART",
           "APOLLO PHARMACY", "UBER INDIA", "BOOKMYSHOW", "NYKAA", "DECATHLON"),
    "KE": ("NAIVAS SUPERMARKET", "CARREFOUR TRM", "JAVA HOUSE", "KPLC PREPAID", "QUICKMART",
           "ARTCAFFE", "TOTAL ENERGIES WESTLANDS", "CHANDARANA FOODPLUS"),
    "NG": ("SHOPRITE LEKKI", "SPAR IKEJA", "CHICKEN REPUBLIC", "JUMIA NIGERIA", "MTN AIRTIME",
           "DSTV MULTICHOICE", "FILLING STATION VI"),
    "US": ("AMAZON MKTPL", "STARBUCKS #10472", "WHOLE FOODS MKT", "SHELL OIL 5744", "TARGET T-1123",
           "UBER TRIP", "NETFLIX.COM", "BEST BUY 00123", "CHIPOTLE 2231"),
    "GB": ("Tesco Express", "Sainsbury's", "Pret A Manger", "Boots", "Greggs", "TfL Travel",
           "Deliveroo", "Waterstones"),
    "EU": ("LIDL", "REWE MARKT", "CARREFOUR MARKET", "MERCADONA", "ALBERT HEIJN", "MEDIAMARKT",
           "ZARA", "DM DROGERIE"),
    "AE": ("CARREFOUR MOE", "LULU HYPERMARKET", "NOON.COM", "EMARAT PETROL", "SPINNEYS"),
    "ZA": ("CHECKERS SANDTON", "WOOLWORTHS", "PICK N PAY", "ENGEN GARAGE", "DIS-CHEM"),
}
NAMES = {
    "IN": ("RAHUL SHARMA", "PRIYA NAIR", "ANKIT VERMA", "DEEPA IYER", "SURESH REDDY",
           "MEERA JOSHI", "ARJUN MEHTA", "KAVYA RAO"),
    "KE": ("JOHN KAMAU", "MARY WANJIKU", "PETER OTIENO", "GRACE ACHIENG", "DAVID MUTUA",
           "FAITH CHEBET", "BRIAN KIPROP"),
    "NG": ("CHIDI OKAFOR", "AMAKA OBI", "TUNDE BAKARE", "NGOZI EZE", "EMEKA NWOSU",
           "BOLA ADEYEMI"),
    "US": ("JOHN SMITH", "MARIA GARCIA", "JAMES BROWN", "EMILY CHEN", "DAVID JOHNSON"),
    "GB": ("Dave Jones", "Emma Wilson", "Oliver Taylor", "Sophie Evans", "Harry Walker"),
    "EU": ("Lukas Becker", "Sanne de Vries", "Jean Dupont", "Lucia Romero", "Marco Rossi"),
}
APPS = ("Paytm", "Swiggy", "Zomato", "PhonePe", "Flipkart", "Amazon", "Netflix", "LinkedIn",
         "PayPal", "Airbnb", "Instagram", "Uber", "Coinbase", "Discord", "Myntra", "CRED")
_PHONE_FORMATS = {
    "IN": ("+91", "6789", 9), "KE": ("+2547", "0129", 7), "NG": ("+234", "789", 9),
    "US": ("+1", "23456789", 9), "GB": ("+447", "4579", 8), "EU": ("+49", "1", 10),
    "AE": ("+9715", "024568", 7), "ZA": ("+27", "678", 8),
}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def phone_number(rng: random.Random, region: str) -> str:
    prefix, first, rest = _PHONE_FORMATS[region]
    return prefix + rng.choice(first) + digits(rng, rest)


def money(rng: random.Random, low: float, high: float, *, whole: float = 0.3) -> float:
    """Log-uniform, so small spends are common and big transfers rare; some are whole."""
    value = low * (high / low) ** rng.random()
    return float(round(value)) if rng.random() < whole else round(value, 2)


def en(value: float, *, indian: bool = False, keep_zero: bool = True) -> str:
    """1234.5 -> "1,234.50" (or "1,23,456.00" with Indian grouping)."""
    whole, cents = f"{value:.2f}".split(".")
    if indian and len(whole) > 3:
        head, tail = whole[:-3], whole[-3:]
        groups: list[str] = []
        while len(head) > 2:
            head, group = head[:-2], head[-2:]
            groups.insert(0, group)
        whole = ",".join([head, *groups, tail])
    else:
        whole = f"{int(whole):,}"
    return whole if cents == "00" and not keep_zero else f"{whole}.{cents}"


def eu(value: float) -> str:
    """1234.5 -> "1.234,50", the way most of the euro area writes money."""
    return en(value).replace(",", " ").replace(".", ",").replace(" ", ".")


def mpesa_code(rng: random.Random, when: datetime) -> str:
    letter = "QRSTUVWXYZ"[when.year % 10]  # M-PESA codes start with a letter per year
    return letter + letters(rng, 2) + rng.choice(string.digits) + "".join(
        rng.choice(string.ascii_uppercase + string.digits) for _ in range(5)
    ) + rng.choice(string.digits)


def ddmmyy(when: datetime, sep: str = "-") -> str:
    return when.strftime(f"%d{sep}%m{sep}%y")


def dmy_short(when: datetime) -> str:
    return f"{when.day}/{when.month}/{when.strftime('%y')}"


def dd_mon_yy(when: datetime) -> str:
    return f"{when.day:02d}-{MONTHS[when.month - 1]}-{when.strftime('%y')}"


def clock(when: datetime) -> str:
    return f"{(when.hour % 12) or 12}:{when.minute:02d} {'AM' if when.hour < 12 else 'PM'}"
