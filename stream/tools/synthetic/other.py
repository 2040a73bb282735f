"""Promotional and other templates: offers, personal texts and service notices."""

from __future__ import annotations

import random
from datetime import datetime

from stream.tools.synthetic.fill import MONTHS, Made, Template, digits, en, phone_number

__all__ = ["TEMPLATES"]


def _promo_flat(rng: random.Random, when: datetime) -> Made:
    shop = rng.choice(("myntra", "ajio", "flipkart", "nykaa"))
    body = (f"Flat {rng.choice((30, 40, 50, 60, 70))}% OFF on top brands! Shop now at "
            f"{shop}.com/sale. Offer valid till midnight. T&C apply. Reply STOP to unsubscribe")
    return "AD-" + shop.upper()[:6], body, {}


def _promo_cashback(rng: random.Random, when: datetime) -> Made:
    cashback = rng.choice((50, 100, 150, 500))
    body = (f"Get Rs {cashback} cashback on your first UPI payment of Rs {cashback * 10} or more! "
            f"Use code FIRST{cashback}. T&C apply. -Paytm")
    return "JM-PAYTMB", body, {"amount": None}


def _promo_tesco(rng: random.Random, when: datetime) -> Made:
    off = rng.choice((3, 5, 10))
    body = (f"Tesco Clubcard: Get £{off} off when you spend £{off * 8} or more this week. "
            "Text STOP to 85325 to opt out.")
    return "Tesco", body, {}


def _promo_bundle(rng: random.Random, when: datetime) -> Made:
    gb, price = rng.choice(((1, 50), (2, 99), (5, 250))), rng.choice((0, 1))
    body = (f"Get {gb[0]}GB for Ksh {gb[1] + price} valid for 24 hrs. Dial *544# now! To opt out, "
            "dial *456*9*5#")
    return "Safaricom", body, {}


def _promo_loan(rng: random.Random, when: datetime) -> Made:
    loan = rng.choice((100000, 250000, 500000, 1000000))
    body = (f"Congratulations! You are eligible for a pre-approved personal loan of Rs "
            f"{en(loan, indian=True, keep_zero=False)}. Get it credited to your account in 10 "
            "mins. Apply now: hdfc.bank/pl")
    return "VM-HDFCBK", body, {"amount": None}


def _promo_jumia(rng: random.Random, when: datetime) -> Made:
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


def _chat(rng: random.Random, when: datetime) -> Made:
    region = rng.choice(("IN", "KE", "NG", "US", "GB"))
    body = rng.choice(_CHAT).format(
        hour=rng.randint(6, 9), minutes=rng.choice((5, 10, 15, 20)), room=rng.randint(100, 999)
    )
    return phone_number(rng, region), body, {}


def _notice(rng: random.Random, when: datetime) -> Made:
    sender, body = rng.choice((
        ("JM-JIOINF", "Your SIM card will be upgraded to 5G tonight. No action needed. -Jio"),
        ("VM-BESCOM", f"Power outage scheduled in your area on {when.day} "
                      f"{MONTHS[when.month - 1]} from 10 AM to 2 PM for maintenance. -BESCOM"),
        ("AD-AIRTEL", f"Dear Customer, your complaint no. {digits(rng, 8)} has been registered. "
                      "We will resolve it within 48 hours. -Airtel"),
    ))
    return sender, body, {}


TEMPLATES = (
    Template("promotional", "IN", 2, _promo_flat),
    Template("promotional", "IN", 1, _promo_cashback),
    Template("promotional", "GB", 1, _promo_tesco),
    Template("promotional", "KE", 1, _promo_bundle),
    Template("promotional", "IN", 1, _promo_loan),
    Template("promotional", "NG", 1, _promo_jumia),
    Template("other", "IN", 3, _chat),
    Template("other", "IN", 1, _notice),
)
