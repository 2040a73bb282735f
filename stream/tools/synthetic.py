"""Synthetic SMS traffic for `stream produce`, the demo and the benchmarks.

Bodies come from templates of the formats people actually receive (Indian bank and UPI
alerts, M-PESA, Nigerian bank alerts, US/UK/EU card and app notices, OTPs, couriers,
airlines, cabs, offers, personal texts), filled with random merchants, names, amounts,
references and dates, so the builtin parser is exercised the way real traffic would.

Everything is drawn from the `random.Random` passed in, ids included, so a seed reproduces
a run exactly; only `received_at` depends on `start`. Without a `start`, the records end
no later than now: an SMS is received before anyone can produce it.
"""

from __future__ import annotations

import json
import random
import string
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "DEFAULT_MAX_SMS_BYTES",
    "MEAN_GAP_S",
    "labelled_sms",
    "malformed_records",
    "synthetic_sms",
]

MEAN_GAP_S = 2.0
"""Mean time between two synthetic SMS: received_at spreads like a steady trickle.

The i-th SMS falls at a random point of the gap that ends `i * MEAN_GAP_S` after the first,
so `count` SMS span at most `(count - 1) * MEAN_GAP_S`, whatever the draws.
"""

DEFAULT_MAX_SMS_BYTES = 65536
"""STREAM_MAX_SMS_BYTES's default: the oversize malformed record is just over it."""

_Made = tuple[str, str, dict[str, Any]]
"""(sender, body, the parse-result fields the template put in, besides its category)."""


@dataclass(frozen=True, slots=True)
class _Template:
    category: str
    region: str
    weight: float
    make: Callable[[random.Random, datetime], _Made]


# ------------------------------------------------------------------ fillers

_MERCHANTS = {
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
_NAMES = {
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
_APPS = ("Paytm", "Swiggy", "Zomato", "PhonePe", "Flipkart", "Amazon", "Netflix", "LinkedIn",
         "PayPal", "Airbnb", "Instagram", "Uber", "Coinbase", "Discord", "Myntra", "CRED")
_PHONE_FORMATS = {
    "IN": ("+91", "6789", 9), "KE": ("+2547", "0129", 7), "NG": ("+234", "789", 9),
    "US": ("+1", "23456789", 9), "GB": ("+447", "4579", 8), "EU": ("+49", "1", 10),
    "AE": ("+9715", "024568", 7), "ZA": ("+27", "678", 8),
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _upper(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def _phone(rng: random.Random, region: str) -> str:
    prefix, first, rest = _PHONE_FORMATS[region]
    return prefix + rng.choice(first) + _digits(rng, rest)


def _amount(rng: random.Random, low: float, high: float, *, whole: float = 0.3) -> float:
    """Log-uniform, so small spends are common and big transfers rare; some are whole."""
    value = low * (high / low) ** rng.random()
    return float(round(value)) if rng.random() < whole else round(value, 2)


def _en(value: float, *, indian: bool = False, keep_zero: bool = True) -> str:
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


def _eu(value: float) -> str:
    """1234.5 -> "1.234,50", the way most of the euro area writes money."""
    return _en(value).replace(",", " ").replace(".", ",").replace(" ", ".")


def _mpesa_code(rng: random.Random, when: datetime) -> str:
    letter = "QRSTUVWXYZ"[when.year % 10]  # M-PESA codes start with a letter per year
    return letter + _upper(rng, 2) + rng.choice(string.digits) + "".join(
        rng.choice(string.ascii_uppercase + string.digits) for _ in range(5)
    ) + rng.choice(string.digits)


def _ddmmyy(when: datetime, sep: str = "-") -> str:
    return when.strftime(f"%d{sep}%m{sep}%y")


def _dmy_short(when: datetime) -> str:
    return f"{when.day}/{when.month}/{when.strftime('%y')}"


def _dd_mon_yy(when: datetime) -> str:
    return f"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.strftime('%y')}"


def _clock(when: datetime) -> str:
    return f"{(when.hour % 12) or 12}:{when.minute:02d} {'AM' if when.hour < 12 else 'PM'}"


def _txn(direction: str, amount: float, currency: str, **fields: Any) -> dict[str, Any]:
    return {"direction": direction, "amount": amount, "currency": currency, **fields}


# ------------------------------------------------------------------ transaction templates


def _hdfc_upi(rng: random.Random, when: datetime) -> _Made:
    amount, balance = _amount(rng, 20, 20000), _amount(rng, 500, 250000)
    tail, ref = _digits(rng, 4), "4" + _digits(rng, 11)
    vpa = rng.choice(("swiggy.stores@axb", "zomato@hdfcbank", "paytmqr28100505010@paytm",
                      f"{rng.choice(_NAMES['IN']).split()[0].lower()}{_digits(rng, 2)}@okicici"))
    body = (f"Rs.{_en(amount, indian=True)} debited from A/c XX{tail} on {_ddmmyy(when)} to VPA "
            f"{vpa} (UPI Ref No {ref}). Avl Bal Rs {_en(balance, indian=True)}. Not you? Call "
            "18002586161 - HDFC Bank")
    return "VM-HDFCBK", body, _txn("debit", amount, "INR", account_tail=tail, counterparty=vpa,
                                   balance=balance, reference=ref)


def _hdfc_sent(rng: random.Random, when: datetime) -> _Made:
    amount, tail, ref = _amount(rng, 10, 5000), _digits(rng, 4), "4" + _digits(rng, 11)
    merchant = rng.choice(_MERCHANTS["IN"])
    body = (f"Sent Rs.{_en(amount)} From HDFC Bank A/C *{tail} To {merchant} On "
            f"{_ddmmyy(when, '/')} Ref {ref} Not You? Call 18002586161/SMS BLOCK UPI to "
            "7308080808")
    return "AD-HDFCBK", body, _txn("debit", amount, "INR", account_tail=tail,
                                   counterparty=merchant, reference=ref)


def _sbi_upi(rng: random.Random, when: datetime) -> _Made:
    amount, tail, ref = round(_amount(rng, 10, 9000), 1), _digits(rng, 4), "4" + _digits(rng, 11)
    merchant = rng.choice(_MERCHANTS["IN"])
    date = f"{when.day:02d}{_MONTHS[when.month - 1]}{when.strftime('%y')}"
    body = (f"Dear UPI user A/C X{tail} debited by {amount:.1f} on date {date} trf to {merchant} "
            f"Refno {ref}. If not u? call 1800111109. -SBI")
    return "JD-SBIINB", body, _txn("debit", amount, "INR", account_tail=tail,
                                   counterparty=merchant, reference=ref)


def _icici_credit(rng: random.Random, when: datetime) -> _Made:
    amount, tail, ref = _amount(rng, 100, 200000), _digits(rng, 3), "4" + _digits(rng, 11)
    name = rng.choice(_NAMES["IN"])
    body = (f"Dear Customer, Acct XX{tail} is credited with Rs {_en(amount, indian=True)} on "
            f"{_dd_mon_yy(when)} from {name}. UPI:{ref}-ICICI Bank.")
    return "VK-ICICIB", body, _txn("credit", amount, "INR", account_tail=tail,
                                   counterparty=name, reference=ref)


def _axis_multiline(rng: random.Random, when: datetime) -> _Made:
    amount, tail, ref = _amount(rng, 50, 30000), _digits(rng, 4), "4" + _digits(rng, 11)
    merchant = rng.choice(_MERCHANTS["IN"])
    body = (f"INR {_en(amount, indian=True)} debited\nA/c no. XX{tail}\n{_ddmmyy(when)}, "
            f"{when:%H:%M:%S}\nUPI/P2M/{ref}/{merchant}\nNot you? SMS BLOCKUPI Cust ID to "
            "919951860002\nAxis Bank")
    return "AX-AXISBK", body, _txn("debit", amount, "INR", account_tail=tail,
                                   counterparty=merchant, reference=ref)


def _icici_card(rng: random.Random, when: datetime) -> _Made:
    amount, limit, tail = _amount(rng, 99, 60000), _amount(rng, 1000, 300000), _digits(rng, 4)
    merchant = rng.choice(_MERCHANTS["IN"])
    body = (f"INR {_en(amount, indian=True)} spent on ICICI Bank Card XX{tail} on "
            f"{_dd_mon_yy(when)} at {merchant}. Avl Limit: INR {_en(limit, indian=True)}. If not "
            f"you, call 1800 2662/SMS BLOCK {tail} to 9215676766")
    return "VM-ICICIB", body, _txn("debit", amount, "INR", account_tail=tail,
                                   counterparty=merchant, balance=None)


def _kotak_salary(rng: random.Random, when: datetime) -> _Made:
    amount, balance = _amount(rng, 20000, 400000), _amount(rng, 20000, 900000)
    tail = _digits(rng, 4)
    body = (f"Dear Customer, Salary of INR {_en(amount, indian=True)} has been credited to your "
            f"A/c XX{tail} on {when.day:02d}-{_MONTHS[when.month - 1]}-{when.year}. Available "
            f"Balance: INR {_en(balance, indian=True)}. - Kotak")
    return "VM-KOTAKB", body, _txn("credit", amount, "INR", account_tail=tail, balance=balance)


def _mpesa_sent(rng: random.Random, when: datetime) -> _Made:
    amount, balance = _amount(rng, 50, 70000, whole=0.8), _amount(rng, 10, 90000)
    code = _mpesa_code(rng, when)
    name, cost = rng.choice(_NAMES["KE"]), rng.choice((0.0, 7.0, 13.0, 23.0, 33.0, 53.0))
    phone = "07" + _digits(rng, 8)
    body = (f"{code} Confirmed. Ksh{_en(amount)} sent to {name} {phone} on {_dmy_short(when)} at "
            f"{_clock(when)}. New M-PESA balance is Ksh{_en(balance)}. Transaction cost, "
            f"Ksh{_en(cost)}.")
    return "MPESA", body, _txn("debit", amount, "KES", counterparty=name, balance=balance,
                               reference=code)


def _mpesa_received(rng: random.Random, when: datetime) -> _Made:
    amount, balance = _amount(rng, 50, 70000, whole=0.8), _amount(rng, 100, 90000)
    code = _mpesa_code(rng, when)
    name, phone = rng.choice(_NAMES["KE"]), "07" + _digits(rng, 8)
    body = (f"{code} Confirmed.You have received Ksh{_en(amount)} from {name} {phone} on "
            f"{_dmy_short(when)} at {_clock(when)}  New M-PESA balance is Ksh{_en(balance)}.")
    return "MPESA", body, _txn("credit", amount, "KES", counterparty=name, balance=balance,
                               reference=code)


def _mpesa_till(rng: random.Random, when: datetime) -> _Made:
    amount, balance = _amount(rng, 20, 15000, whole=0.7), _amount(rng, 10, 50000)
    code = _mpesa_code(rng, when)
    merchant = rng.choice(_MERCHANTS["KE"])
    body = (f"{code} Confirmed. Ksh{_en(amount)} paid to {merchant}. on {_dmy_short(when)} at "
            f"{_clock(when)}.New M-PESA balance is Ksh{_en(balance)}. Transaction cost, Ksh0.00.")
    return "MPESA", body, _txn("debit", amount, "KES", counterparty=merchant, balance=balance,
                               reference=code)


def _gtbank(rng: random.Random, when: datetime) -> _Made:
    amount, balance = _amount(rng, 500, 500000), _amount(rng, 100, 2000000)
    head, tail = _digits(rng, 3), _digits(rng, 3)
    body = (f"Acct: {head}****{tail}\nAmt: NGN{_en(amount)} DR\nDesc: POS PURCHASE "
            f"{rng.choice(_MERCHANTS['NG'])}\nAvail Bal: NGN{_en(balance)}\n"
            f"Date: {when:%Y-%m-%d %H:%M}")
    return "GTBank", body, _txn("debit", amount, "NGN", account_tail=tail, balance=balance)


def _zenith(rng: random.Random, when: datetime) -> _Made:
    amount, balance = _amount(rng, 1000, 900000), _amount(rng, 1000, 3000000)
    tail = _digits(rng, 2)
    body = (f"Txn: Credit\nAc: {_digits(rng, 2)}XXXXXX{tail}\nAmt: NGN {_en(amount)}\nDes: NIP FRM "
            f"{rng.choice(_NAMES['NG'])}\nDate: {when.day:02d}-{_MONTHS[when.month - 1].upper()}"
            f"-{when.year}\nBal: NGN {_en(balance)}")
    return "ZENITHBANK", body, _txn("credit", amount, "NGN", account_tail=tail, balance=balance)


def _chase(rng: random.Random, when: datetime) -> _Made:
    amount, merchant = _amount(rng, 2, 900, whole=0.1), rng.choice(_MERCHANTS["US"])
    body = (f"Chase Freedom: You made a ${_en(amount)} transaction with {merchant} on "
            f"{_MONTHS[when.month - 1]} {when.day}, {when.year} at {_clock(when)} ET.")
    return "24273", body, _txn("debit", amount, "USD", counterparty=merchant)


def _us_card(rng: random.Random, when: datetime) -> _Made:
    amount, tail = _amount(rng, 2, 900, whole=0.1), _digits(rng, 4)
    merchant = rng.choice(_MERCHANTS["US"])
    body = f"Your card ending {tail} was charged USD {_en(amount)} at {merchant}"
    return rng.choice(("72166", "93557", "33968")), body, _txn(
        "debit", amount, "USD", account_tail=tail, counterparty=merchant
    )


def _zelle(rng: random.Random, when: datetime) -> _Made:
    amount, name = _amount(rng, 10, 3000, whole=0.5), rng.choice(_NAMES["US"])
    body = (f"Chase: You received ${_en(amount)} from {name} via Zelle®. It may take a few "
            "minutes for this money to show up in your account.")
    return "24273", body, _txn("credit", amount, "USD", counterparty=name)


def _monzo(rng: random.Random, when: datetime) -> _Made:
    amount, balance = _amount(rng, 1, 300), _amount(rng, 5, 5000)
    merchant = rng.choice(_MERCHANTS["GB"])
    body = f"Monzo: You spent £{_en(amount)} at {merchant}. Balance: £{_en(balance)}"
    return "Monzo", body, _txn("debit", amount, "GBP", counterparty=merchant, balance=balance)


def _revolut_sent(rng: random.Random, when: datetime) -> _Made:
    amount, name = _amount(rng, 5, 1000, whole=0.6), rng.choice(_NAMES["GB"])
    body = f"Revolut: You sent £{_en(amount, keep_zero=False)} to {name}"
    return "Revolut", body, _txn("debit", amount, "GBP", counterparty=name)


def _n26(rng: random.Random, when: datetime) -> _Made:
    amount, tail = _amount(rng, 1, 2500, whole=0.1), _digits(rng, 4)
    merchant = rng.choice(_MERCHANTS["EU"])
    body = f"N26: You paid € {_eu(amount)} at {merchant} with your card ending {tail}."
    return "N26", body, _txn("debit", amount, "EUR", account_tail=tail, counterparty=merchant)


def _bbva(rng: random.Random, when: datetime) -> _Made:
    amount, balance, tail = _amount(rng, 1, 900, whole=0.1), _amount(rng, 10, 9000), _digits(rng, 4)
    merchant = rng.choice(_MERCHANTS["EU"])
    body = (f"BBVA: Compra con tarjeta ****{tail} por {_eu(amount)} EUR en {merchant}. Saldo "
            f"disponible {_eu(balance)} EUR.")
    return "BBVA", body, _txn("debit", amount, "EUR", account_tail=tail, counterparty=merchant,
                              balance=balance)


def _enbd(rng: random.Random, when: datetime) -> _Made:
    amount, balance = _amount(rng, 5, 5000, whole=0.1), _amount(rng, 100, 90000)
    tail = _digits(rng, 4)
    merchant = rng.choice(_MERCHANTS["AE"])
    body = (f"Purchase of AED {_en(amount)} with Debit Card ending {tail} at {merchant}. Avl "
            f"Balance is AED {_en(balance)}.")
    return "ENBD", body, _txn("debit", amount, "AED", account_tail=tail, counterparty=merchant,
                              balance=balance)


def _capitec(rng: random.Random, when: datetime) -> _Made:
    # Always with cents: a bare "R" is read as rand only before "150.00", not "150".
    amount, balance = _amount(rng, 5, 8000, whole=0.0), _amount(rng, 10, 60000, whole=0.0)
    tail = _digits(rng, 4)
    merchant = rng.choice(_MERCHANTS["ZA"])
    body = (f"Capitec: Purchase of R{_en(amount)} at {merchant} on card ending {tail}. Available "
            f"balance: R{_en(balance)}")
    return "Capitec", body, _txn("debit", amount, "ZAR", account_tail=tail, counterparty=merchant,
                                 balance=balance)


# ------------------------------------------------------------------ otp templates


def _otp(code: str, **fields: Any) -> dict[str, Any]:
    return {"otp": code, **fields}


def _otp_login(rng: random.Random, when: datetime) -> _Made:
    app, code = rng.choice(_APPS), _digits(rng, 6)
    body = f"{code} is your OTP for login to {app}. Do not share it with anyone."
    return "VM-" + app.upper()[:6], body, _otp(code, service=app)


def _otp_use(rng: random.Random, when: datetime) -> _Made:
    app, code = rng.choice(_APPS), _digits(rng, rng.choice((4, 6)))
    minutes = rng.choice((3, 5, 10, 15))
    body = f"Use {code} to log in to {app}. Valid for {minutes} minutes. Do not share this code."
    return "AD-" + app.upper()[:6], body, _otp(code, service=app, expires_in_s=minutes * 60)


def _otp_google(rng: random.Random, when: datetime) -> _Made:
    code = _digits(rng, 6)
    return "22000", f"G-{code} is your Google verification code.", _otp(code, service="Google")


def _otp_expires(rng: random.Random, when: datetime) -> _Made:
    app, code, minutes = rng.choice(_APPS), _digits(rng, 6), rng.choice((2, 5, 10, 30))
    body = (f"Your {app} verification code is {code}. It expires in {minutes} minutes. Don't "
            "share it with anyone.")
    return _phone(rng, "US"), body, _otp(code, service=app, expires_in_s=minutes * 60)


def _otp_card(rng: random.Random, when: datetime) -> _Made:
    amount, tail, code = _amount(rng, 100, 90000), _digits(rng, 4), _digits(rng, 6)
    body = (f"Dear Customer, OTP for transaction of Rs.{_en(amount, indian=True)} at "
            f"{rng.choice(_MERCHANTS['IN'])} on your HDFC Bank Card XX{tail} is {code}. Valid for "
            "5 mins. Do not share OTP with anyone.")
    return "AD-HDFCBK", body, _otp(code, expires_in_s=300, amount=None)


def _otp_whatsapp(rng: random.Random, when: datetime) -> _Made:
    first, second = _digits(rng, 3), _digits(rng, 3)
    body = f"Your WhatsApp code: {first}-{second}. Don't share this code with others"
    return _phone(rng, rng.choice(("GB", "US"))), body, _otp(first + second, service="WhatsApp")


def _otp_hash(rng: random.Random, when: datetime) -> _Made:
    app, code = rng.choice(("Ola", "Rapido", "Swiggy", "Meesho")), _digits(rng, 4)
    app_hash = "".join(rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(11))
    body = f"<#> {code} is your {app} verification code. {app_hash}"
    return "AD-" + app.upper()[:6], body, _otp(code, service=app)


def _otp_bracket(rng: random.Random, when: datetime) -> _Made:
    app = rng.choice(("Shopee", "Binance", "Lazada", "Tokopedia"))
    code, minutes = _digits(rng, 6), rng.choice((5, 15))
    body = f"[{app}] Your OTP is {code}. Valid for {minutes} mins. Do not share it with anyone."
    return app, body, _otp(code, service=app, expires_in_s=minutes * 60)


# ------------------------------------------------------------------ delivery templates


def _order(ref: str | None, counterparty: str) -> dict[str, Any]:
    return {"reference": ref, "counterparty": counterparty}


def _bluedart(rng: random.Random, when: datetime) -> _Made:
    awb = _digits(rng, 10)
    body = (f"Your package with AWB {awb} is out for delivery today. Track: "
            f"https://bluedart.com/t/{awb} - Blue Dart")
    return "BLUDRT", body, _order(awb, "Blue Dart")


def _amazon_shipped(rng: random.Random, when: datetime) -> _Made:
    ref = f"{rng.choice(('402', '403', '404', '171'))}-{_digits(rng, 7)}-{_digits(rng, 7)}"
    body = f"Amazon: Your order #{ref} has been shipped. Track at amazon.in/track"
    return "AX-AMAZON", body, _order(ref, "Amazon")


def _parcel_transit(rng: random.Random, when: datetime) -> _Made:
    carrier = rng.choice(("DHL", "FedEx", "UPS", "Aramex"))
    ref, eta = _digits(rng, rng.choice((10, 12))), when + timedelta(days=rng.randint(1, 4))
    body = (f"{carrier}: Your parcel {ref} is in transit and will arrive on {eta.day} "
            f"{_MONTHS[eta.month - 1]}.")
    return carrier, body, _order(ref, carrier)


def _zomato_delivered(rng: random.Random, when: datetime) -> _Made:
    ref = _digits(rng, 10)
    body = f"Zomato: Yay! Your order #{ref} has been delivered. Enjoy your meal!"
    return "VM-ZOMATO", body, _order(ref, "Zomato")


def _delhivery(rng: random.Random, when: datetime) -> _Made:
    ref, shop = _digits(rng, 13), rng.choice(("Myntra", "Meesho", "Nykaa", "Ajio"))
    body = f"Delhivery: Your shipment {ref} from {shop} is out for delivery."
    return "VM-DLHVRY", body, _order(ref, "Delhivery")


def _jumia(rng: random.Random, when: datetime) -> _Made:
    ref = _digits(rng, 9)
    body = (f"Jumia: Your order {ref} has been shipped and will be delivered in 2-3 working "
            "days.")
    return "JUMIA", body, _order(ref, "Jumia")


# ------------------------------------------------------------------ booking templates


def _irctc(rng: random.Random, when: datetime) -> _Made:
    pnr, fare = rng.choice("2468") + _digits(rng, 9), _amount(rng, 200, 5000)
    route = rng.choice(("NDLS-MMCT", "SBC-MAS", "HWH-NDLS", "CSMT-PUNE"))
    body = (f"PNR:{pnr},TRN:{_digits(rng, 5)},DOJ:{_ddmmyy(when)},SL,{route},Dep:{when:%H:%M},"
            f"B{rng.randint(1, 9)} {rng.randint(1, 72)},Fare:{_en(fare)},SC:17.7+PG CHGS.")
    return "VM-IRCTCi", body, {"reference": pnr}


def _indigo(rng: random.Random, when: datetime) -> _Made:
    digit = string.digits
    pnr = _upper(rng, 1) + rng.choice(digit) + _upper(rng, 2) + rng.choice(digit) + _upper(rng, 1)
    route = rng.choice(("DEL-BOM", "BLR-HYD", "MAA-CCU", "BOM-GOI"))
    body = (f"IndiGo: Your booking is confirmed. PNR {pnr}, 6E {_digits(rng, 4)} {route} on "
            f"{when.day} {_MONTHS[when.month - 1]} {when.year}, dep {when:%H:%M}. Web check-in: "
            "goindigo.in")
    return "VM-IndiGo", body, _order(pnr, "IndiGo")


def _uber_arriving(rng: random.Random, when: datetime) -> _Made:
    driver = rng.choice(("Ramesh", "Peter", "Carlos", "Ahmed", "Sipho"))
    car = rng.choice(("white Swift Dzire", "grey Toyota Prius", "silver Toyota Axio"))
    plate = f"{_upper(rng, 2)}{_digits(rng, 2)}{_upper(rng, 2)}{_digits(rng, 4)}"
    body = f"Uber: Your driver, {driver}, is arriving in a {car} ({plate}). Meet at the pickup."
    return "Uber", body, {"counterparty": "Uber"}


def _oyo(rng: random.Random, when: datetime) -> _Made:
    ref = _upper(rng, 4) + _digits(rng, 4)
    hotel = rng.choice(("OYO Townhouse 045, Koramangala", "OYO Flagship Andheri East",
                        "Capital O Hotel Sunrise, Goa"))
    body = (f"OYO: Booking ID {ref} confirmed at {hotel} for {when.day} "
            f"{_MONTHS[when.month - 1]}. Check-in 12 PM.")
    return "VM-OYOROM", body, _order(ref, "OYO")


def _kenya_airways(rng: random.Random, when: datetime) -> _Made:
    ref = rng.choice(string.digits) + _upper(rng, 2) + rng.choice(string.digits) + _upper(rng, 2)
    name = rng.choice(_NAMES["KE"]).split()[0]
    body = (f"Kenya Airways: Dear {name}, your booking reference {ref} for KQ {_digits(rng, 3)} "
            f"NBO-MBA on {when:%d}{_MONTHS[when.month - 1].upper()}{when:%y} is confirmed.")
    return "KQ", body, _order(ref, "Kenya Airways")


def _airbnb(rng: random.Random, when: datetime) -> _Made:
    ref = "HM" + _upper(rng, 4) + _digits(rng, 4)
    place = rng.choice(("Lakeview Cabin", "Loft in Kreuzberg", "Beach House Diani"))
    body = (f"Airbnb: Your reservation {ref} at {place} is confirmed for "
            f"{_MONTHS[when.month - 1]} {when.day}. Check-in after 3 PM.")
    return "Airbnb", body, _order(ref, "Airbnb")


# ------------------------------------------------------------------ promotional and other


def _promo_flat(rng: random.Random, when: datetime) -> _Made:
    shop = rng.choice(("myntra", "ajio", "flipkart", "nykaa"))
    body = (f"Flat {rng.choice((30, 40, 50, 60, 70))}% OFF on top brands! Shop now at "
            f"{shop}.com/sale. Offer valid till midnight. T&C apply. Reply STOP to unsubscribe")
    return "AD-" + shop.upper()[:6], body, {}


def _promo_cashback(rng: random.Random, when: datetime) -> _Made:
    cashback = rng.choice((50, 100, 150, 500))
    body = (f"Get Rs {cashback} cashback on your first UPI payment of Rs {cashback * 10} or more! "
            f"Use code FIRST{cashback}. T&C apply. -Paytm")
    return "JM-PAYTMB", body, {"amount": None}


def _promo_tesco(rng: random.Random, when: datetime) -> _Made:
    off = rng.choice((3, 5, 10))
    body = (f"Tesco Clubcard: Get £{off} off when you spend £{off * 8} or more this week. "
            "Text STOP to 85325 to opt out.")
    return "Tesco", body, {}


def _promo_bundle(rng: random.Random, when: datetime) -> _Made:
    gb, price = rng.choice(((1, 50), (2, 99), (5, 250))), rng.choice((0, 1))
    body = (f"Get {gb[0]}GB for Ksh {gb[1] + price} valid for 24 hrs. Dial *544# now! To opt out, "
            "dial *456*9*5#")
    return "Safaricom", body, {}


def _promo_loan(rng: random.Random, when: datetime) -> _Made:
    loan = rng.choice((100000, 250000, 500000, 1000000))
    body = (f"Congratulations! You are eligible for a pre-approved personal loan of Rs "
            f"{_en(loan, indian=True, keep_zero=False)}. Get it credited to your account in 10 "
            "mins. Apply now: hdfc.bank/pl")
    return "VM-HDFCBK", body, {"amount": None}


def _promo_jumia(rng: random.Random, when: datetime) -> _Made:
    body = (f"Jumia Black Friday is HERE! 🎉 Up to {rng.choice((50, 70, 80))}% OFF on phones, TVs "
            "and more. Shop now: jumia.com.ng. Reply STOP to opt out.")
    return "JUMIA", body, {}


_CHAT = (
    "Hey, are we still on for dinner at {hour}? 🍝",
    "Running {minutes} mins late, stuck in traffic",
    "Call me when you land. Love, Mom",
    "Happy birthday!! 🎂🎉 Have an amazing year ahead",
    "Can you send me the wifi password again?",
    "Ok see you at {hour}:30 at the station",
    "Bring milk on your way home pls",
    "Thanks for today! Let's do it again soon 😊",
    "Nimefika salama. Nitakupigia jioni.",
    "Meeting moved to {hour}:00 tomorrow, room {room}.",
)


def _chat(rng: random.Random, when: datetime) -> _Made:
    region = rng.choice(("IN", "KE", "NG", "US", "GB"))
    body = rng.choice(_CHAT).format(
        hour=rng.randint(6, 9), minutes=rng.choice((5, 10, 15, 20)), room=rng.randint(100, 999)
    )
    return _phone(rng, region), body, {}


def _notice(rng: random.Random, when: datetime) -> _Made:
    sender, body = rng.choice((
        ("JM-JIOINF", "Your SIM card will be upgraded to 5G tonight. No action needed. -Jio"),
        ("VM-BESCOM", f"Power outage scheduled in your area on {when.day} "
                      f"{_MONTHS[when.month - 1]} from 10 AM to 2 PM for maintenance. -BESCOM"),
        ("AD-AIRTEL", f"Dear Customer, your complaint no. {_digits(rng, 8)} has been registered. "
                      "We will resolve it within 48 hours. -Airtel"),
    ))
    return sender, body, {}


# Weights: roughly the mix of an SMS inbox, transactions and OTPs first.
_TEMPLATES = (
    _Template("transaction", "IN", 5, _hdfc_upi),
    _Template("transaction", "IN", 3, _hdfc_sent),
    _Template("transaction", "IN", 3, _sbi_upi),
    _Template("transaction", "IN", 2, _icici_credit),
    _Template("transaction", "IN", 2, _axis_multiline),
    _Template("transaction", "IN", 2, _icici_card),
    _Template("transaction", "IN", 1, _kotak_salary),
    _Template("transaction", "KE", 4, _mpesa_sent),
    _Template("transaction", "KE", 3, _mpesa_received),
    _Template("transaction", "KE", 3, _mpesa_till),
    _Template("transaction", "NG", 2, _gtbank),
    _Template("transaction", "NG", 1, _zenith),
    _Template("transaction", "US", 2, _chase),
    _Template("transaction", "US", 2, _us_card),
    _Template("transaction", "US", 1, _zelle),
    _Template("transaction", "GB", 2, _monzo),
    _Template("transaction", "GB", 1, _revolut_sent),
    _Template("transaction", "EU", 1, _n26),
    _Template("transaction", "EU", 1, _bbva),
    _Template("transaction", "AE", 1, _enbd),
    _Template("transaction", "ZA", 1, _capitec),
    _Template("otp", "IN", 5, _otp_login),
    _Template("otp", "IN", 3, _otp_use),
    _Template("otp", "US", 2, _otp_google),
    _Template("otp", "US", 2, _otp_expires),
    _Template("otp", "IN", 2, _otp_card),
    _Template("otp", "GB", 1, _otp_whatsapp),
    _Template("otp", "IN", 1, _otp_hash),
    _Template("otp", "EU", 1, _otp_bracket),
    _Template("delivery", "IN", 2, _bluedart),
    _Template("delivery", "IN", 2, _amazon_shipped),
    _Template("delivery", "US", 1, _parcel_transit),
    _Template("delivery", "IN", 1, _zomato_delivered),
    _Template("delivery", "IN", 1, _delhivery),
    _Template("delivery", "NG", 1, _jumia),
    _Template("booking", "IN", 2, _irctc),
    _Template("booking", "IN", 1, _indigo),
    _Template("booking", "US", 1, _uber_arriving),
    _Template("booking", "IN", 1, _oyo),
    _Template("booking", "KE", 1, _kenya_airways),
    _Template("booking", "EU", 1, _airbnb),
    _Template("promotional", "IN", 2, _promo_flat),
    _Template("promotional", "IN", 1, _promo_cashback),
    _Template("promotional", "GB", 1, _promo_tesco),
    _Template("promotional", "KE", 1, _promo_bundle),
    _Template("promotional", "IN", 1, _promo_loan),
    _Template("promotional", "NG", 1, _promo_jumia),
    _Template("other", "IN", 3, _chat),
    _Template("other", "IN", 1, _notice),
)
_WEIGHTS = tuple(template.weight for template in _TEMPLATES)


def _first(start: datetime | None, count: int) -> datetime:
    """`start` in UTC (naive means UTC); without one, early enough for the last to be past."""
    if start is None:
        return datetime.now(UTC) - timedelta(seconds=max(0, count - 1) * MEAN_GAP_S)
    return start.astimezone(UTC) if start.tzinfo else start.replace(tzinfo=UTC)


def labelled_sms(
    rng: random.Random, *, count: int, start: datetime | None = None
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """`count` synthetic SMS records, each with the fields its template put in.

    The first is received at `start`, the others in ascending order after it (MEAN_GAP_S);
    without a `start`, the last is received at the latest now. The labels let tests and the
    demo check the builtin parser against what was meant: `category` always, and the
    amount, currency, OTP, reference... where the template knows them. Draws from `rng`
    exactly as `synthetic_sms` does.
    """
    first = _first(start, count)
    when = first
    for number in range(1, count + 1):
        sms_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        template = rng.choices(_TEMPLATES, weights=_WEIGHTS)[0]
        sender, body, fields = template.make(rng, when)
        record = {
            "id": sms_id,
            "sender": sender,
            "body": body,
            "received_at": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "recipient": _phone(rng, template.region),
        }
        yield record, {"category": template.category, **fields}
        when = first + timedelta(seconds=(number - rng.random()) * MEAN_GAP_S)


def synthetic_sms(
    rng: random.Random, *, count: int, start: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """`count` synthetic SMS records: id, sender, body, received_at (UTC, "Z") and recipient.

    Called by `stream produce --count N`, the demo and the benchmarks; the same seed and
    `start` give the same records. Without a `start`, every `received_at` is in the past.
    """
    for record, _ in labelled_sms(rng, count=count, start=start):
        yield record


# ------------------------------------------------------------------ malformed records


_MISSING = object()  # a field value meaning "leave this field out"


def _bad_record(rng: random.Random, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": f"bad-{uuid.UUID(int=rng.getrandbits(128), version=4)}",
        "sender": rng.choice(("VM-HDFCBK", "MPESA", "+254712345678", "GTBank")),
        "body": rng.choice(("Rs 500 debited from A/c XX1234", "Your OTP is 123456", "hi")),
        "received_at": "2024-03-12T10:15:00Z",
    }
    record.update(fields)
    return {key: value for key, value in record.items() if value is not _MISSING}


def _malformed(rng: random.Random, kind: int, max_bytes: int) -> bytes:
    dumps = json.dumps
    if kind == 0:  # invalid JSON: the producer was cut off mid-value
        text = dumps(_bad_record(rng))
        return text[: rng.randint(10, len(text) - 2)].encode()
    if kind == 1:  # invalid UTF-8: the body was encoded as Latin-1
        return dumps(_bad_record(rng, body="Café payment of £5"), ensure_ascii=False).encode(
            "latin-1"
        )
    if kind == 2:
        return dumps(_bad_record(rng, id=_MISSING)).encode()
    if kind == 3:
        body = rng.choice((12345, None, ["Rs 500"], {"text": "Rs 500"}))
        return dumps(_bad_record(rng, body=body)).encode()
    if kind == 4:
        when = rng.choice(("yesterday 5pm", "12/03/2024 14:22", "1710238500", ""))
        return dumps(_bad_record(rng, received_at=when)).encode()
    if kind == 5:  # oversize: valid JSON, just over the byte limit
        return dumps(_bad_record(rng, body="x" * (max_bytes + rng.randint(1, 1024)))).encode()
    if kind == 6:
        return dumps([_bad_record(rng)]).encode()  # valid JSON, not an object
    return dumps(_bad_record(rng, sender="")).encode()


_MALFORMED_KINDS = 8


def malformed_records(
    rng: random.Random, count: int, *, max_bytes: int = DEFAULT_MAX_SMS_BYTES
) -> list[bytes]:
    """`count` Kafka record values the codec must dead-letter, cycling through 8 kinds.

    In order: invalid JSON, invalid UTF-8, no "id", a "body" that is not a string, a
    "received_at" that is not ISO-8601, a value over `max_bytes`, a JSON array, an empty
    "sender". `count >= 8` gives at least one of each.
    """
    return [_malformed(rng, kind % _MALFORMED_KINDS, max_bytes) for kind in range(count)]
