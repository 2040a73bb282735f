"""Delivery and booking templates: couriers, food orders, trains, flights, cabs and stays."""

from __future__ import annotations

import random
import string
from datetime import datetime, timedelta
from typing import Any

from stream.tools.synthetic.fill import (
    MONTHS,
    NAMES,
    Made,
    Template,
    ddmmyy,
    digits,
    en,
    letters,
    money,
)

__all__ = ["TEMPLATES"]


def _order(ref: str | None, counterparty: str) -> dict[str, Any]:
    return {"reference": ref, "counterparty": counterparty}


def _bluedart(rng: random.Random, when: datetime) -> Made:
    awb = digits(rng, 10)
    body = (f"Your package with AWB {awb} is out for delivery today. Track: "
            f"https://bluedart.com/t/{awb} - Blue Dart")
    return "BLUDRT", body, _order(awb, "Blue Dart")


def _amazon_shipped(rng: random.Random, when: datetime) -> Made:
    ref = f"{rng.choice(('402', '403', '404', '171'))}-{digits(rng, 7)}-{digits(rng, 7)}"
    body = f"Amazon: Your order #{ref} has been shipped. Track at amazon.in/track"
    return "AX-AMAZON", body, _order(ref, "Amazon")


def _parcel_transit(rng: random.Random, when: datetime) -> Made:
    carrier = rng.choice(("DHL", "FedEx", "UPS", "Aramex"))
    ref, eta = digits(rng, rng.choice((10, 12))), when + timedelta(days=rng.randint(1, 4))
    body = (f"{carrier}: Your parcel {ref} is in transit and will arrive on {eta.day} "
            f"{MONTHS[eta.month - 1]}.")
    return carrier, body, _order(ref, carrier)


def _zomato_delivered(rng: random.Random, when: datetime) -> Made:
    ref = digits(rng, 10)
    body = f"Zomato: Yay! Your order #{ref} has been delivered. Enjoy your meal!"
    return "VM-ZOMATO", body, _order(ref, "Zomato")


def _delhivery(rng: random.Random, when: datetime) -> Made:
    ref, shop = digits(rng, 13), rng.choice(("Myntra", "Meesho", "Nykaa", "Ajio"))
    body = f"Delhivery: Your shipment {ref} from {shop} is out for delivery."
    return "VM-DLHVRY", body, _order(ref, "Delhivery")


def _jumia(rng: random.Random, when: datetime) -> Made:
    ref = digits(rng, 9)
    body = (f"Jumia: Your order {ref} has been shipped and will be delivered in 2-3 working "
            "days.")
    return "JUMIA", body, _order(ref, "Jumia")


# ------------------------------------------------------------------ booking templates


def _irctc(rng: random.Random, when: datetime) -> Made:
    pnr, fare = rng.choice("2468") + digits(rng, 9), money(rng, 200, 5000)
    route = rng.choice(("NDLS-MMCT", "SBC-MAS", "HWH-NDLS", "CSMT-PUNE"))
    body = (f"PNR:{pnr},TRN:{digits(rng, 5)},DOJ:{ddmmyy(when)},SL,{route},Dep:{when:%H:%M},"
            f"B{rng.randint(1, 9)} {rng.randint(1, 72)},Fare:{en(fare)},SC:17.7+PG CHGS.")
    return "VM-IRCTCi", body, {"reference": pnr}


def _indigo(rng: random.Random, when: datetime) -> Made:
    digit = string.digits
    pnr = (
        letters(rng, 1) + rng.choice(digit) + letters(rng, 2) + rng.choice(digit)
        + letters(rng, 1)
    )
    route = rng.choice(("DEL-BOM", "BLR-HYD", "MAA-CCU", "BOM-GOI"))
    body = (f"IndiGo: Your booking is confirmed. PNR {pnr}, 6E {digits(rng, 4)} {route} on "
            f"{when.day} {MONTHS[when.month - 1]} {when.year}, dep {when:%H:%M}. Web check-in: "
            "goindigo.in")
    return "VM-IndiGo", body, _order(pnr, "IndiGo")


def _uber_arriving(rng: random.Random, when: datetime) -> Made:
    driver = rng.choice(("Ramesh", "Peter", "Carlos", "Ahmed", "Sipho"))
    car = rng.choice(("white Swift Dzire", "grey Toyota Prius", "silver Toyota Axio"))
    plate = f"{letters(rng, 2)}{digits(rng, 2)}{letters(rng, 2)}{digits(rng, 4)}"
    body = f"Uber: Your driver, {driver}, is arriving in a {car} ({plate}). Meet at the pickup."
    return "Uber", body, {"counterparty": "Uber"}


def _oyo(rng: random.Random, when: datetime) -> Made:
    ref = letters(rng, 4) + digits(rng, 4)
    hotel = rng.choice(("OYO Townhouse 045, Koramangala", "OYO Flagship Andheri East",
                        "Capital O Hotel Sunrise, Goa"))
    body = (f"OYO: Booking ID {ref} confirmed at {hotel} for {when.day} "
            f"{MONTHS[when.month - 1]}. Check-in 12 PM.")
    return "VM-OYOROM", body, _order(ref, "OYO")


def _kenya_airways(rng: random.Random, when: datetime) -> Made:
    ref = rng.choice(string.digits) + letters(rng, 2) + rng.choice(string.digits) + letters(rng, 2)
    name = rng.choice(NAMES["KE"]).split()[0]
    body = (f"Kenya Airways: Dear {name}, your booking reference {ref} for KQ {digits(rng, 3)} "
            f"NBO-MBA on {when:%d}{MONTHS[when.month - 1].upper()}{when:%y} is confirmed.")
    return "KQ", body, _order(ref, "Kenya Airways")


def _airbnb(rng: random.Random, when: datetime) -> Made:
    ref = "HM" + letters(rng, 4) + digits(rng, 4)
    place = rng.choice(("Lakeview Cabin", "Loft in Kreuzberg", "Beach House Diani"))
    body = (f"Airbnb: Your reservation {ref} at {place} is confirmed for "
            f"{MONTHS[when.month - 1]} {when.day}. Check-in after 3 PM.")
    return "Airbnb", body, _order(ref, "Airbnb")


TEMPLATES = (
    Template("delivery", "IN", 2, _bluedart),
    Template("delivery", "IN", 2, _amazon_shipped),
    Template("delivery", "US", 1, _parcel_transit),
    Template("delivery", "IN", 1, _zomato_delivered),
    Template("delivery", "IN", 1, _delhivery),
    Template("delivery", "NG", 1, _jumia),
    Template("booking", "IN", 2, _irctc),
    Template("booking", "IN", 1, _indigo),
    Template("booking", "US", 1, _uber_arriving),
    Template("booking", "IN", 1, _oyo),
    Template("booking", "KE", 1, _kenya_airways),
    Template("booking", "EU", 1, _airbnb),
)
