"""Statement templates and slot fillers for the SYNTHETIC financial sentiment data.

All companies are fictional (prefix + suffix). ``{CO}``, ``{CO2}`` and ``{TICK}`` are filled once per
statement; every other ``{SLOT}`` gets a fresh value from ``fill_slot``. ``{UP}`` and ``{DOWN}``
write "to X from Y" with X above or below Y, so the figures agree with the label.
"""

import random
from typing import Callable, Dict, Tuple

COMPANY_PREFIXES = (
    "Aster", "Borealis", "Cobalt", "Dunmore", "Elmstead", "Fjordline", "Granite", "Halcyon", "Ironbridge",
    "Juniper", "Kestrel", "Lumen", "Meridian", "Northwind", "Oakridge", "Pinecrest", "Quarrystone",
    "Redwater", "Silverline", "Tidewater", "Umberfield", "Valemont", "Westhaven", "Yarrow", "Zenithal",
)
COMPANY_SUFFIXES = (
    "Holdings", "Bancorp", "Industries", "Energy", "Logistics", "Pharma", "Systems", "Foods", "Mining",
    "Retail", "Telecom", "Capital", "Motors", "Paper", "Shipping",
)

STATEMENTS: Dict[str, Tuple[str, ...]] = {
    "positive": (
        "{CO} reported a {PCT} % rise in quarterly net profit to {MONEY} .",
        "{CO} ( {TICK} ) raised its full-year revenue guidance after strong demand for {PRODUCT} .",
        "Operating profit at {CO} increased {UP} .",
        "{CO} won a {MONEY} contract to supply {PRODUCT} to customers in {REGION} .",
        "Shares of {CO} jumped {PCT} % after the company beat earnings expectations .",
        "{CO} narrowed its operating loss {DOWN} , better than analysts had expected .",
        "{CO} said net sales grew by {PCT} % in {PERIOD} .",
        "The board of {CO} proposed a higher dividend of {PRICE} per share .",
        "{CO} completed the acquisition of {CO2} , strengthening its position in {REGION} .",
        "Order intake at {CO} rose {PCT} % to {MONEY} .",
        "Analysts upgraded {TICK} to buy , citing improving margins .",
        "Earnings per share at {CO} increased to {PRICE} from {SMALL_PRICE} .",
        "{CO} expects its operating result to improve clearly in {PERIOD} .",
    ),
    "negative": (
        "{CO} reported a {PCT} % drop in quarterly net profit to {MONEY} .",
        "{CO} ( {TICK} ) cut its full-year outlook , citing weak demand for {PRODUCT} .",
        "Operating profit at {CO} fell {DOWN} .",
        "{CO} will lay off {STAFF} employees at its plant in {CITY} .",
        "Shares of {CO} slumped {PCT} % after the company missed earnings expectations .",
        "{CO} swung to an operating loss of {MONEY} in {PERIOD} .",
        "Net sales at {CO} decreased by {PCT} % in {PERIOD} .",
        "{CO} suspended its dividend as its debt continued to rise .",
        "A rating agency downgraded {CO} , citing falling cash flow .",
        "{CO} issued a profit warning for {PERIOD} .",
        "Analysts downgraded {TICK} to sell , citing shrinking margins .",
        "{CO} faces a {MONEY} fine over accounting irregularities .",
        "Pre-tax loss at {CO} widened {UP} .",
    ),
    "neutral": (
        "{CO} will publish its interim report for {PERIOD} on {DATE} .",
        "{CO} is headquartered in {CITY} and employs about {STAFF} people .",
        "{CO} ( {TICK} ) operates in the {SECTOR} sector .",
        "The annual general meeting of {CO} will be held in {CITY} on {DATE} .",
        "{CO} appointed {PERSON} as chief financial officer , effective {DATE} .",
        "The shares of {CO} are listed on the {EXCHANGE} .",
        "{CO} produces {PRODUCT} for customers in {REGION} .",
        "The transaction between {CO} and {CO2} is expected to close in {PERIOD} .",
        "{CO} has {SMALL} production facilities in {REGION} .",
        "{CO} did not disclose the value of the deal with {CO2} .",
        "{CO} said it will continue to review its strategic options .",
        "{CO} will hold a conference call for analysts on {DATE} .",
        "{CO} changed its reporting currency to {CURRENCY} from the start of {PERIOD} .",
    ),
}

_WORDS: Dict[str, Tuple[str, ...]] = {
    "CURRENCY": ("EUR", "USD", "GBP", "SEK"),
    "PRODUCT": ("paper machines", "telecom equipment", "steel pipes", "frozen foods", "cargo ships",
                "software licences", "medical devices", "electric motors", "wind turbines", "packaging"),
    "REGION": ("Northern Europe", "the Baltic region", "North America", "Asia", "Latin America", "Germany"),
    "CITY": ("Helsinki", "Tampere", "Oulu", "Stockholm", "Tallinn", "Hamburg", "Rotterdam", "Leeds"),
    "PERIOD": ("the first quarter", "the second quarter", "the third quarter", "the fourth quarter",
               "the first half of the year", "the financial year"),
    "SECTOR": ("forest products", "telecommunications", "engineering", "retail", "energy", "banking"),
    "EXCHANGE": ("Helsinki Stock Exchange", "Nasdaq Stockholm", "London Stock Exchange",
                 "Frankfurt Stock Exchange"),
    "PERSON": ("Anna Virtanen", "Mikko Laine", "Sara Lind", "Johan Berg", "Emma Koskinen", "Peter Hall"),
    "MONTH": ("January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December"),
}


def _money(rng: random.Random, low: float = 1.0, high: float = 900.0) -> str:
    return f"{rng.choice(_WORDS['CURRENCY'])} {rng.uniform(low, high):.1f} million"


def _move(rng: random.Random, up: bool) -> str:
    a, b = sorted(rng.uniform(1.0, 900.0) for _ in range(2))
    currency = rng.choice(_WORDS["CURRENCY"])
    new, old = (b, a) if up else (a, b)
    return f"to {currency} {new:.1f} million from {currency} {old:.1f} million"


_MAKERS: Dict[str, Callable[[random.Random], str]] = {
    "PCT": lambda rng: f"{rng.uniform(0.5, 45.0):.1f}",
    "MONEY": _money,
    "UP": lambda rng: _move(rng, up=True),
    "DOWN": lambda rng: _move(rng, up=False),
    "PRICE": lambda rng: f"EUR {rng.uniform(0.5, 4.0):.2f}",
    "SMALL_PRICE": lambda rng: f"EUR {rng.uniform(0.05, 0.45):.2f}",
    "STAFF": lambda rng: str(rng.choice((40, 85, 120, 250, 400, 1200, 3500))),
    "SMALL": lambda rng: str(rng.randint(2, 12)),
    "DATE": lambda rng: f"{rng.choice(_WORDS['MONTH'])} {rng.randint(1, 28)}",
}


def fill_slot(slot: str, rng: random.Random) -> str:
    if slot in _MAKERS:
        return _MAKERS[slot](rng)
    if slot in _WORDS:
        return rng.choice(_WORDS[slot])
    raise KeyError(f"finance template slot {{{slot}}} has no filler")
