"""Transaction templates: bank, card, UPI and mobile-money alerts of eight regions."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

from stream.tools.synthetic.fill import (
    MERCHANTS,
    MONTHS,
    NAMES,
    Made,
    Template,
    clock,
    dd_mon_yy,
    ddmmyy,
    digits,
    dmy_short,
    en,
    eu,
    money,
    mpesa_code,
)

__all__ = ["TEMPLATES"]


def _txn(direction: str, amount: float, currency: str, **fields: Any) -> dict[str, Any]:
    return {"direction": direction, "amount": amount, "currency": currency, **fields}


def _hdfc_upi(rng: random.Random, when: datetime) -> Made:
    amount, balance = money(rng, 20, 20000), money(rng, 500, 250000)
    tail, ref = digits(rng, 4), "4" + digits(rng, 11)
    vpa = rng.choice(("swiggy.stores@axb", "zomato@hdfcbank", "paytmqr28100505010@paytm",
                      f"{rng.choice(NAMES['IN']).split()[0].lower()}{digits(rng, 2)}@okicici"))
    body = (f"Rs.{en(amount, indian=True)} debited from A/c XX{tail} on {ddmmyy(when)} to VPA "
            f"{vpa} (UPI Ref No {ref}). Avl Bal Rs {en(balance, indian=True)}. Not you? Call "
            "18002586161 - HDFC Bank")
    return "VM-HDFCBK", body, _txn("debit", amount, "INR", account_tail=tail, counterparty=vpa,
                                   balance=balance, reference=ref)


def _hdfc_sent(rng: random.Random, when: datetime) -> Made:
    amount, tail, ref = money(rng, 10, 5000), digits(rng, 4), "4" + digits(rng, 11)
    merchant = rng.choice(MERCHANTS["IN"])
    body = (f"Sent Rs.{en(amount)} From HDFC Bank A/C *{tail} To {merchant} On "
            f"{ddmmyy(when, '/')} Ref {ref} Not You? Call 18002586161/SMS BLOCK UPI to "
            "7308080808")
    return "AD-HDFCBK", body, _txn("debit", amount, "INR", account_tail=tail,
                                   counterparty=merchant, reference=ref)


def _sbi_upi(rng: random.Random, when: datetime) -> Made:
    amount, tail, ref = round(money(rng, 10, 9000), 1), digits(rng, 4), "4" + digits(rng, 11)
    merchant = rng.choice(MERCHANTS["IN"])
    date = f"{when.day:02d}{MONTHS[when.month - 1]}{when.strftime('%y')}"
    body = (f"Dear UPI user A/C X{tail} debited by {amount:.1f} on date {date} trf to {merchant} "
            f"Refno {ref}. If not u? call 1800111109. -SBI")
    return "JD-SBIINB", body, _txn("debit", amount, "INR", account_tail=tail,
                                   counterparty=merchant, reference=ref)


def _icici_credit(rng: random.Random, when: datetime) -> Made:
    amount, tail, ref = money(rng, 100, 200000), digits(rng, 3), "4" + digits(rng, 11)
    name = rng.choice(NAMES["IN"])
    body = (f"Dear Customer, Acct XX{tail} is credited with Rs {en(amount, indian=True)} on "
            f"{dd_mon_yy(when)} from {name}. UPI:{ref}-ICICI Bank.")
    return "VK-ICICIB", body, _txn("credit", amount, "INR", account_tail=tail,
                                   counterparty=name, reference=ref)


def _axis_multiline(rng: random.Random, when: datetime) -> Made:
    amount, tail, ref = money(rng, 50, 30000), digits(rng, 4), "4" + digits(rng, 11)
    merchant = rng.choice(MERCHANTS["IN"])
    body = (f"INR {en(amount, indian=True)} debited\nA/c no. XX{tail}\n{ddmmyy(when)}, "
            f"{when:%H:%M:%S}\nUPI/P2M/{ref}/{merchant}\nNot you? SMS BLOCKUPI Cust ID to "
            "919951860002\nAxis Bank")
    return "AX-AXISBK", body, _txn("debit", amount, "INR", account_tail=tail,
                                   counterparty=merchant, reference=ref)


def _icici_card(rng: random.Random, when: datetime) -> Made:
    amount, limit, tail = money(rng, 99, 60000), money(rng, 1000, 300000), digits(rng, 4)
    merchant = rng.choice(MERCHANTS["IN"])
    body = (f"INR {en(amount, indian=True)} spent on ICICI Bank Card XX{tail} on "
            f"{dd_mon_yy(when)} at {merchant}. Avl Limit: INR {en(limit, indian=True)}. If not "
            f"you, call 1800 2662/SMS BLOCK {tail} to 9215676766")
    return "VM-ICICIB", body, _txn("debit", amount, "INR", account_tail=tail,
                                   counterparty=merchant, balance=None)


def _kotak_salary(rng: random.Random, when: datetime) -> Made:
    amount, balance = money(rng, 20000, 400000), money(rng, 20000, 900000)
    tail = digits(rng, 4)
    body = (f"Dear Customer, Salary of INR {en(amount, indian=True)} has been credited to your "
            f"A/c XX{tail} on {when.day:02d}-{MONTHS[when.month - 1]}-{when.year}. Available "
            f"Balance: INR {en(balance, indian=True)}. - Kotak")
    return "VM-KOTAKB", body, _txn("credit", amount, "INR", account_tail=tail, balance=balance)


def _mpesa_sent(rng: random.Random, when: datetime) -> Made:
    amount, balance = money(rng, 50, 70000, whole=0.8), money(rng, 10, 90000)
    code = mpesa_code(rng, when)
    name, cost = rng.choice(NAMES["KE"]), rng.choice((0.0, 7.0, 13.0, 23.0, 33.0, 53.0))
    phone = "07" + digits(rng, 8)
    body = (f"{code} Confirmed. Ksh{en(amount)} sent to {name} {phone} on {dmy_short(when)} at "
            f"{clock(when)}. New M-PESA balance is Ksh{en(balance)}. Transaction cost, "
            f"Ksh{en(cost)}.")
    return "MPESA", body, _txn("debit", amount, "KES", counterparty=name, balance=balance,
                               reference=code)


def _mpesa_received(rng: random.Random, when: datetime) -> Made:
    amount, balance = money(rng, 50, 70000, whole=0.8), money(rng, 100, 90000)
    code = mpesa_code(rng, when)
    name, phone = rng.choice(NAMES["KE"]), "07" + digits(rng, 8)
    body = (f"{code} Confirmed.You have received Ksh{en(amount)} from {name} {phone} on "
            f"{dmy_short(when)} at {clock(when)}  New M-PESA balance is Ksh{en(balance)}.")
    return "MPESA", body, _txn("credit", amount, "KES", counterparty=name, balance=balance,
                               reference=code)


def _mpesa_till(rng: random.Random, when: datetime) -> Made:
    amount, balance = money(rng, 20, 15000, whole=0.7), money(rng, 10, 50000)
    code = mpesa_code(rng, when)
    merchant = rng.choice(MERCHANTS["KE"])
    body = (f"{code} Confirmed. Ksh{en(amount)} paid to {merchant}. on {dmy_short(when)} at "
            f"{clock(when)}.New M-PESA balance is Ksh{en(balance)}. Transaction cost, Ksh0.00.")
    return "MPESA", body, _txn("debit", amount, "KES", counterparty=merchant, balance=balance,
                               reference=code)


def _gtbank(rng: random.Random, when: datetime) -> Made:
    amount, balance = money(rng, 500, 500000), money(rng, 100, 2000000)
    head, tail = digits(rng, 3), digits(rng, 3)
    body = (f"Acct: {head}****{tail}\nAmt: NGN{en(amount)} DR\nDesc: POS PURCHASE "
            f"{rng.choice(MERCHANTS['NG'])}\nAvail Bal: NGN{en(balance)}\n"
            f"Date: {when:%Y-%m-%d %H:%M}")
    return "GTBank", body, _txn("debit", amount, "NGN", account_tail=tail, balance=balance)


def _zenith(rng: random.Random, when: datetime) -> Made:
    amount, balance = money(rng, 1000, 900000), money(rng, 1000, 3000000)
    tail = digits(rng, 2)
    body = (f"Txn: Credit\nAc: {digits(rng, 2)}XXXXXX{tail}\nAmt: NGN {en(amount)}\nDes: NIP FRM "
            f"{rng.choice(NAMES['NG'])}\nDate: {when.day:02d}-{MONTHS[when.month - 1].upper()}"
            f"-{when.year}\nBal: NGN {en(balance)}")
    return "ZENITHBANK", body, _txn("credit", amount, "NGN", account_tail=tail, balance=balance)


def _chase(rng: random.Random, when: datetime) -> Made:
    amount, merchant = money(rng, 2, 900, whole=0.1), rng.choice(MERCHANTS["US"])
    body = (f"Chase Freedom: You made a ${en(amount)} transaction with {merchant} on "
            f"{MONTHS[when.month - 1]} {when.day}, {when.year} at {clock(when)} ET.")
    return "24273", body, _txn("debit", amount, "USD", counterparty=merchant)


def _us_card(rng: random.Random, when: datetime) -> Made:
    amount, tail = money(rng, 2, 900, whole=0.1), digits(rng, 4)
    merchant = rng.choice(MERCHANTS["US"])
    body = f"Your card ending {tail} was charged USD {en(amount)} at {merchant}"
    return rng.choice(("72166", "93557", "33968")), body, _txn(
        "debit", amount, "USD", account_tail=tail, counterparty=merchant
    )


def _zelle(rng: random.Random, when: datetime) -> Made:
    amount, name = money(rng, 10, 3000, whole=0.5), rng.choice(NAMES["US"])
    body = (f"Chase: You received ${en(amount)} from {name} via Zelle®. It may take a few "
            "minutes for this money to show up in your account.")
    return "24273", body, _txn("credit", amount, "USD", counterparty=name)


def _monzo(rng: random.Random, when: datetime) -> Made:
    amount, balance = money(rng, 1, 300), money(rng, 5, 5000)
    merchant = rng.choice(MERCHANTS["GB"])
    body = f"Monzo: You spent £{en(amount)} at {merchant}. Balance: £{en(balance)}"
    return "Monzo", body, _txn("debit", amount, "GBP", counterparty=merchant, balance=balance)


def _revolut_sent(rng: random.Random, when: datetime) -> Made:
    amount, name = money(rng, 5, 1000, whole=0.6), rng.choice(NAMES["GB"])
    body = f"Revolut: You sent £{en(amount, keep_zero=False)} to {name}"
    return "Revolut", body, _txn("debit", amount, "GBP", counterparty=name)


def _n26(rng: random.Random, when: datetime) -> Made:
    amount, tail = money(rng, 1, 2500, whole=0.1), digits(rng, 4)
    merchant = rng.choice(MERCHANTS["EU"])
    body = f"N26: You paid € {eu(amount)} at {merchant} with your card ending {tail}."
    return "N26", body, _txn("debit", amount, "EUR", account_tail=tail, counterparty=merchant)


def _bbva(rng: random.Random, when: datetime) -> Made:
    amount, balance, tail = money(rng, 1, 900, whole=0.1), money(rng, 10, 9000), digits(rng, 4)
    merchant = rng.choice(MERCHANTS["EU"])
    body = (f"BBVA: Compra con tarjeta ****{tail} por {eu(amount)} EUR en {merchant}. Saldo "
            f"disponible {eu(balance)} EUR.")
    return "BBVA", body, _txn("debit", amount, "EUR", account_tail=tail, counterparty=merchant,
                              balance=balance)


def _enbd(rng: random.Random, when: datetime) -> Made:
    amount, balance = money(rng, 5, 5000, whole=0.1), money(rng, 100, 90000)
    tail = digits(rng, 4)
    merchant = rng.choice(MERCHANTS["AE"])
    body = (f"Purchase of AED {en(amount)} with Debit Card ending {tail} at {merchant}. Avl "
            f"Balance is AED {en(balance)}.")
    return "ENBD", body, _txn("debit", amount, "AED", account_tail=tail, counterparty=merchant,
                              balance=balance)


def _capitec(rng: random.Random, when: datetime) -> Made:
    # Always with cents: a bare "R" is read as rand only before "150.00", not "150".
    amount, balance = money(rng, 5, 8000, whole=0.0), money(rng, 10, 60000, whole=0.0)
    tail = digits(rng, 4)
    merchant = rng.choice(MERCHANTS["ZA"])
    body = (f"Capitec: Purchase of R{en(amount)} at {merchant} on card ending {tail}. Available "
            f"balance: R{en(balance)}")
    return "Capitec", body, _txn("debit", amount, "ZAR", account_tail=tail, counterparty=merchant,
                                 balance=balance)


TEMPLATES = (
    Template("transaction", "IN", 5, _hdfc_upi),
    Template("transaction", "IN", 3, _hdfc_sent),
    Template("transaction", "IN", 3, _sbi_upi),
    Template("transaction", "IN", 2, _icici_credit),
    Template("transaction", "IN", 2, _axis_multiline),
    Template("transaction", "IN", 2, _icici_card),
    Template("transaction", "IN", 1, _kotak_salary),
    Template("transaction", "KE", 4, _mpesa_sent),
    Template("transaction", "KE", 3, _mpesa_received),
    Template("transaction", "KE", 3, _mpesa_till),
    Template("transaction", "NG", 2, _gtbank),
    Template("transaction", "NG", 1, _zenith),
    Template("transaction", "US", 2, _chase),
    Template("transaction", "US", 2, _us_card),
    Template("transaction", "US", 1, _zelle),
    Template("transaction", "GB", 2, _monzo),
    Template("transaction", "GB", 1, _revolut_sent),
    Template("transaction", "EU", 1, _n26),
    Template("transaction", "EU", 1, _bbva),
    Template("transaction", "AE", 1, _enbd),
    Template("transaction", "ZA", 1, _capitec),
)
