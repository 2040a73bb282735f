"""One-time code templates: logins, card payments, app codes, with and without an expiry."""

from __future__ import annotations

import random
import string
from datetime import datetime
from typing import Any

from stream.tools.synthetic.fill import (
    APPS,
    MERCHANTS,
    Made,
    Template,
    digits,
    en,
    money,
    phone_number,
)

__all__ = ["TEMPLATES"]


def _otp(code: str, **fields: Any) -> dict[str, Any]:
    return {"otp": code, **fields}


def _otp_login(rng: random.Random, when: datetime) -> Made:
    app, code = rng.choice(APPS), digits(rng, 6)
    body = f"{code} is your OTP for login to {app}. Do not share it with anyone."
    return "VM-" + app.upper()[:6], body, _otp(code, service=app)


def _otp_use(rng: random.Random, when: datetime) -> Made:
    app, code = rng.choice(APPS), digits(rng, rng.choice((4, 6)))
    minutes = rng.choice((3, 5, 10, 15))
    body = f"Use {code} to log in to {app}. Valid for {minutes} minutes. Do not share this code."
    return "AD-" + app.upper()[:6], body, _otp(code, service=app, expires_in_s=minutes * 60)


def _otp_google(rng: random.Random, when: datetime) -> Made:
    code = digits(rng, 6)
    return "22000", f"G-{code} is your Google verification code.", _otp(code, service="Google")


def _otp_expires(rng: random.Random, when: datetime) -> Made:
    app, code, minutes = rng.choice(APPS), digits(rng, 6), rng.choice((2, 5, 10, 30))
    body = (f"Your {app} verification code is {code}. It expires in {minutes} minutes. Don't "
            "share it with anyone.")
    return phone_number(rng, "US"), body, _otp(code, service=app, expires_in_s=minutes * 60)


def _otp_card(rng: random.Random, when: datetime) -> Made:
    amount, tail, code = money(rng, 100, 90000), digits(rng, 4), digits(rng, 6)
    body = (f"Dear Customer, OTP for transaction of Rs.{en(amount, indian=True)} at "
            f"{rng.choice(MERCHANTS['IN'])} on your HDFC Bank Card XX{tail} is {code}. Valid for "
            "5 mins. Do not share OTP with anyone.")
    return "AD-HDFCBK", body, _otp(code, expires_in_s=300, amount=None)


def _otp_whatsapp(rng: random.Random, when: datetime) -> Made:
    first, second = digits(rng, 3), digits(rng, 3)
    body = f"Your WhatsApp code: {first}-{second}. Don't share this code with others"
    sender = phone_number(rng, rng.choice(("GB", "US")))
    return sender, body, _otp(first + second, service="WhatsApp")


def _otp_hash(rng: random.Random, when: datetime) -> Made:
    app, code = rng.choice(("Ola", "Rapido", "Swiggy", "Meesho")), digits(rng, 4)
    app_hash = "".join(rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(11))
    body = f"<#> {code} is your {app} verification code. {app_hash}"
    return "AD-" + app.upper()[:6], body, _otp(code, service=app)


def _otp_bracket(rng: random.Random, when: datetime) -> Made:
    app = rng.choice(("Shopee", "Binance", "Lazada", "Tokopedia"))
    code, minutes = digits(rng, 6), rng.choice((5, 15))
    body = f"[{app}] Your OTP is {code}. Valid for {minutes} mins. Do not share it with anyone."
    return app, body, _otp(code, service=app, expires_in_s=minutes * 60)


TEMPLATES = (
    Template("otp", "IN", 5, _otp_login),
    Template("otp", "IN", 3, _otp_use),
    Template("otp", "US", 2, _otp_google),
    Template("otp", "US", 2, _otp_expires),
    Template("otp", "IN", 2, _otp_card),
    Template("otp", "GB", 1, _otp_whatsapp),
    Template("otp", "IN", 1, _otp_hash),
    Template("otp", "EU", 1, _otp_bracket),
)
