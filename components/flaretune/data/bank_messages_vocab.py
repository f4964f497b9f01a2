"""Cues, fillers and surface noise of the SYNTHETIC bank messages (``bank_messages``).

Nothing here is real customer or market text; every company, bank, person and handle is made up and
every URL is under the reserved ``.example`` domain. A cue is ``(text, score)``: the score is the
cue's polarity times its intensity (weak 1, strong 2; 0 for neutral), and a negated cue carries its
own score (negating a hope is negative, negating a bad word mildly positive), so the label rule in
``bank_messages`` only adds scores. Slots in ``{}`` get a fresh filler per message.
"""

from typing import Dict, Tuple

Cue = Tuple[str, int]

MARKET_CUES: Tuple[Cue, ...] = (
    # strong positive
    ("beat on {METRIC}", 2), ("crushed {METRIC} estimates", 2), ("raised fy guidance", 2),
    ("record {METRIC} in {Q}", 2), ("upgraded to buy at {BROKER}", 2), ("pt raised to {PRICE}", 2),
    ("{METRIC} up {BIG_PCT}% yoy", 2), ("won the {MONEY} {REGION} contract", 2),
    ("buyback of {MONEY} announced", 2),
    ("dividend hiked {PCT}%", 2), ("margins expanding fast", 2),
    # weak positive
    ("{METRIC} up {PCT}% yoy", 1), ("slightly ahead on {METRIC}", 1), ("steady inflows this week", 1),
    ("modest beat on eps", 1), ("{METRIC} better than last q", 1), ("doing better than {CO2} on {METRIC}", 1),
    ("nice bounce off the lows", 1), ("{METRIC} a touch above consensus", 1), ("loan book growing {PCT}% qoq", 1),
    # strong negative
    ("guidance cut", -2), ("missed on {METRIC}", -2), ("profit warning for {Q}", -2),
    ("downgraded to sell at {BROKER}", -2),
    ("pt cut to {PRICE}", -2), ("dividend suspended", -2), ("layoffs at the {CITY} plant", -2),
    ("{METRIC} down {BIG_PCT}% yoy", -2), ("fined {MONEY} over reporting errors", -2), ("writedown of {MONEY}", -2),
    ("credit line pulled", -2), ("shares tanking premarket", -2),
    # weak negative
    ("{METRIC} down {PCT}% yoy", -1), ("margins a bit softer", -1), ("slight miss on eps", -1),
    ("soft {Q} bookings", -1), ("{METRIC} worse than last q", -1), ("lagging {CO2} on {METRIC}", -1),
    ("costs creeping up", -1), ("{METRIC} a touch below consensus", -1), ("deposit outflows of {PCT}%", -1),
    # neutral
    ("reports {Q} on {DATE}", 0), ("earnings call at {TIME}", 0), ("ex-div date is {DATE}", 0),
    ("new cfo starts {DATE}", 0), ("volume about average today", 0), ("{METRIC} in line with consensus", 0),
    ("{METRIC} flat yoy", 0), ("agm in {CITY} on {DATE}", 0), ("in line with {CO2} on {METRIC}", 0),
    ("moving its listing to {EXCHANGE}", 0), ("{Q} numbers out {DATE}", 0), ("filed the annual report", 0),
    ("investor day in {CITY}", 0), ("trading unchanged at {PRICE}", 0),
)
MARKET_NEGATED: Tuple[Cue, ...] = (
    ("not expecting a rebound", -1), ("no sign of a recovery in {METRIC}", -2), ("not buying the guidance", -1),
    ("dont see {METRIC} improving", -1), ("not a great print", -1), ("no beat this time", -1),
    ("not bad on {METRIC}", 1), ("not worried about {METRIC}", 1), ("no longer expecting a cut", 1),
    ("not as bad as feared", 1), ("no real surprises", 0), ("not much new in the filing", 0),
)
CUSTOMER_CUES: Tuple[Cue, ...] = (
    ("refund came thru in {DAYS} days, great service", 2), ("thanks for sorting my card so fast", 2),
    ("love the new app", 2), ("best mortgage rate i found", 2), ("branch staff in {CITY} were brilliant", 2),
    ("thanks for the help", 1), ("new app layout is nice", 1), ("transfer went through ok", 1),
    ("chat agent was helpful", 1), ("savings rate up a bit, good", 1),
    ("app keeps crashing", -2), ("card declined twice today", -2), ("charged {AMT} for nothing", -2),
    ("on hold for {MINS} minutes", -2), ("account frozen with no warning", -2), ("lost my payment, furious", -2),
    ("fees went up again", -1), ("transfer took {DAYS} days", -1), ("login is slow", -1),
    ("statement is confusing", -1), ("branch in {CITY} closing", -1),
    ("how do i update my address", 0), ("branch hours on {DATE}?", 0), ("need a new pin", 0),
    ("is the app down for maintenance {DATE}", 0), ("what is the fx fee on {AMT}", 0),
    ("can i change my direct debit date", 0), ("moving to {CITY} next month, which branch", 0),
)
CUSTOMER_NEGATED: Tuple[Cue, ...] = (
    ("not happy with the wait", -1), ("not impressed with the new fees", -1), ("still not fixed", -2),
    ("nobody called me back", -2), ("not bad for a bank app", 1), ("no problems since the update", 1),
    ("no complaints so far", 1), ("no rush on this", 0),
)

# a contrast's second clause dominates: score = CONTRAST_FIRST_WEIGHT * first + second
CONTRASTS = ("but", "but", "though", "however", "yet", "but still")
ADDITIVES = ("and", "and", ",", "+", "also", "plus", "&")
HEDGES = ("maybe", "might see", "possibly", "prob", "rumour:", "unconfirmed:", "could get", "hearing")
CUSTOMER_HEDGES = ("maybe", "i think", "kinda", "seems like", "sort of")
OPENERS = (
    "hmm", "ok so", "fwiw", "imo", "tbh", "fyi", "quick one:", "desk note:", "from the call:", "RT", "so",
    "heads up", "update:", "btw", "wow",
)
TAILS = ("thoughts?", "...", "!!", "?", "more later", "lol", "eod", "fwiw", "dyor")
HASHTAGS = ("#earnings", "#banking", "#markets", "#stocks", "#q{QN}", "#fintech", "#rates", "#dividends", "#deskchat")
HANDLE_WORDS = (
    "desk", "trader", "macro", "fin", "quant", "bonds", "retail", "value", "chart", "alpha", "ledger", "tape",
)
URL_HOSTS = ("news.example", "lnk.example", "mktwire.example", "bankdesk.example", "filings.example")
BANKS = ("Northwind Bank", "Halcyon Savings", "Fjordline Credit", "Yarrow Mutual", "Oakridge Bank")

FILLERS: Dict[str, Tuple[str, ...]] = {
    "METRIC": ("revenue", "rev", "eps", "margins", "nii", "deposits", "loan growth", "ebitda", "fcf", "sales",
               "bookings", "fee income", "guidance", "net profit"),
    "BROKER": ("Kestrel Research", "Umber Securities", "Valemont Partners", "Zenith Brokers"),
    "REGION": ("baltic", "nordic", "latam", "apac", "german", "uk"),
    "CITY": ("Tampere", "Oulu", "Tallinn", "Hamburg", "Rotterdam", "Leeds", "Bergen", "Gdansk"),
    "EXCHANGE": ("the main board", "the growth market", "a second exchange"),
    "TIME": ("9am", "10:30", "2pm cet", "4pm", "noon"),
}

# common misspellings (correct -> wrong) applied to words that are present
MISSPELLINGS: Dict[str, str] = {
    "guidance": "guidence", "revenue": "revenu", "dividend": "divident", "receive": "recieve",
    "definitely": "definately", "margins": "margns", "expecting": "expectin", "through": "thru",
    "account": "acount", "minutes": "mins", "again": "agian", "today": "2day", "please": "pls",
    "because": "bc", "thanks": "thx", "really": "rly", "consensus": "concensus", "separate": "seperate",
    "business": "buisness", "until": "untill", "recovery": "recovry", "estimates": "estimats",
}
