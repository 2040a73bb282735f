"""Deliveries and bookings: the words that signal them, and their reference and platform.

A parcel's tracking number and a flight's PNR are read the same way, after the word that
announces them, so both categories share the field extraction.
"""

from __future__ import annotations

import re
from typing import Any

from stream.sms.names import prefix_brand, signature_brand

__all__ = ["BOOKING", "DELIVERY", "order_fields"]

DELIVERY = (
    "out for delivery", "shipped", "dispatched", "delivered", "in transit", "awb", "tracking",
    "shipment", "consignment", "courier", "parcel", "package", "arriving today",
    "attempted delivery", "delivery partner", "delivery executive", "on the way", "picked up",
)
BOOKING = (
    "pnr", "booking", "booked", "reservation", "check-in", "checkin", "boarding", "ticket",
    "flight", "your ride", "driver", "your cab", "itinerary", "appointment",
    "confirmation number", "confirmation #", "your trip", "table for", "hotel", "seat",
    "pickup point", "is arriving", "arriving now", " ride",
)

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


def order_fields(result: dict[str, Any], text: str, low: str) -> None:
    """Fill `reference` (tracking, order, PNR or booking number) and `counterparty`
    (carrier, airline, hotel or platform) of a delivery or booking `result`."""
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
        prefix_brand(text) or (brand.group() if brand else None) or signature_brand(text)
    )

