"""Vocabulary and clause templates of the SYNTHETIC telegraphic clinical notes (``clinical_notes``).

Nothing here is patient text. Chemical and Disease names come from the DrugBank and MeSH lexicons
(``pools``) or from the abbreviation lists below; Procedure, Anatomy, Test and Dosage come from the
modest hand-written lists below, some of them per specialty. Slots: ``{CHEM}`` ``{DIS}`` ``{PROC}``
``{ANAT}`` ``{TEST}`` ``{DOSE}`` are entities; ``{FREQ}`` ``{ROUTE}`` ``{NUM}`` ``{VAL}`` ``{SYMPT}``
``{FIND}`` ``{THERAPY}`` ``{WHEN}`` are fillers tagged ``O`` (vitals with numbers and units, therapies,
normal findings: look-alikes that stand where entities usually do). Tokens are separated by spaces.
"""

from typing import Dict, Tuple

ENTITY_SLOTS = {
    "{CHEM}": "Chemical", "{DIS}": "Disease", "{PROC}": "Procedure",
    "{ANAT}": "Anatomy", "{TEST}": "Test", "{DOSE}": "Dosage",
}
ENTITY_TYPES = ("Chemical", "Disease", "Procedure", "Anatomy", "Test", "Dosage")

# short forms written in notes, tagged like the full name (Disease / Chemical)
DISEASE_ABBREVIATIONS = (
    "htn", "dm2", "dm", "chf", "copd", "afib", "cad", "ckd", "uti", "mi", "dvt", "pe", "gerd", "cva",
    "tia", "osa", "aki", "pna", "hld", "esrd", "bph", "oa", "ra", "sle", "nstemi", "ards",
)
CHEMICAL_ABBREVIATIONS = ("asa", "ntg", "hctz", "mtx", "kcl", "tpa", "ivig", "mso4", "apap", "ns", "lr", "tmp")

DOSES = (
    "500 mg", "40 mg", "20 mg", "10 mg", "5 mg", "2.5 mg", "81 mg", "325 mg", "1 g", "2 g", "0.5 mg",
    "100 mcg", "25 mcg", "10 units", "6 units", "20 units", "2 puffs", "1 puff", "1 tab", "2 tabs",
    "5 ml", "10 ml", "1 mg / kg", "20 meq", "1 amp", "2 l",
)

PROCEDURES = (
    "intubation", "central line placement", "thoracentesis", "paracentesis", "lumbar puncture",
    "bone marrow biopsy", "colonoscopy", "egd", "cardiac cath", "pci", "cabg", "appendectomy",
    "cholecystectomy", "hemodialysis", "bronchoscopy", "cardioversion", "skin biopsy", "i & d",
)
ANATOMY = (
    "chest", "abdomen", "rll", "lll", "left knee", "right hip", "lower extremities", "lumbar spine",
    "epigastrium", "left arm", "right foot", "neck", "bilateral lungs", "ruq", "llq", "scalp", "left eye",
    "sacrum", "groin", "right shoulder",
)
TESTS = (
    "cbc", "bmp", "cmp", "troponin", "a1c", "inr", "lfts", "ua", "blood cultures", "cxr", "ekg", "ecg",
    "echo", "ct head", "mri brain", "abg", "lactate", "tsh", "lipase", "bnp", "d - dimer", "ct abd",
)
# each specialty's own frequent Procedure / Test words (drawn first with probability skew)
SPECIALTY_PROCEDURES: Dict[str, Tuple[str, ...]] = {
    "oncology": ("port placement", "bone marrow biopsy", "core biopsy", "mastectomy", "lumpectomy",
                 "chemo infusion", "radiation"),
    "cardiology": ("cardiac cath", "pci", "cabg", "cardioversion", "ablation", "pacemaker placement",
                   "tee"),
    "neurology": ("lumbar puncture", "eeg monitoring", "craniotomy", "thrombectomy", "nerve block",
                  "botox injection"),
    "infectious": ("i & d", "picc placement", "wound debridement", "paracentesis", "joint aspiration"),
}
SPECIALTY_TESTS: Dict[str, Tuple[str, ...]] = {
    "oncology": ("pet ct", "cea", "psa", "ldh", "cbc w / diff", "ca - 125"),
    "cardiology": ("troponin", "bnp", "echo", "ekg", "stress test", "lipid panel", "holter"),
    "neurology": ("eeg", "mri brain", "ct head", "emg", "csf analysis", "cta neck"),
    "infectious": ("blood cultures", "procalcitonin", "crp", "esr", "hiv test", "quantiferon"),
}
SPECIALTY_ANATOMY: Dict[str, Tuple[str, ...]] = {
    "oncology": ("left breast", "axilla", "liver", "mediastinum", "pelvis"),
    "cardiology": ("chest", "left arm", "lower extremities", "jaw", "carotids"),
    "neurology": ("left arm", "right face", "lumbar spine", "scalp", "cervical spine"),
    "infectious": ("right foot", "groin", "rll", "sacrum", "left thigh"),
}

FILLERS: Dict[str, Tuple[str, ...]] = {
    "{FREQ}": ("bid", "tid", "qd", "daily", "qhs", "prn", "q6h", "q8h", "qam", "x1", "weekly", "once"),
    "{ROUTE}": ("po", "iv", "sq", "im", "pr", "sl", "inh"),
    "{NUM}": tuple(str(n) for n in range(2, 15)),
    "{VAL}": ("bp 142 / 88", "hr 96", "t 38.4", "rr 22", "spo2 91 %", "bp 98 / 60", "hr 54", "wt 82 kg",
              "t 37.1", "spo2 97 % ra", "gcs 15", "pain 6 / 10"),
    "{SYMPT}": ("sob", "cp", "nausea", "dizziness", "fatigue", "chills", "cough", "weakness", "poor po intake",
                "palpitations", "ha", "back pain"),
    "{FIND}": ("nad", "rrr", "ctab", "soft nt nd", "no edema", "a & o x3", "no focal deficits", "wwp",
               "mmm", "clear", "good air entry", "no rash"),
    "{THERAPY}": ("pt / ot", "cpap", "bipap", "wound care", "iv fluids", "abx", "ice packs", "diet",
                  "compression stockings", "incentive spirometry", "home o2", "tele"),
    "{WHEN}": ("today", "overnight", "this am", "yesterday", "on admission", "x2 days", "since monday",
               "last week", "in ed", "on arrival"),
}

# clause templates by note type (families of ``specialties.FAMILIES``): (weight, template)
Clauses = Tuple[Tuple[float, str], ...]
FREE: Clauses = (
    (3, "vss"), (3, "afebrile"), (2, "pt resting comfortably"), (2, "no acute events {WHEN}"),
    (2, "tolerating po"), (2, "{VAL}"), (2, "{VAL} , {VAL}"), (1, "ambulating w / assist"),
    (2, "plan discussed w / pt and family"), (2, "f / u in {NUM} wks"), (1, "dispo home when stable"),
    (2, "exam : {FIND} , {FIND}"), (1, "pt c / o {SYMPT} {WHEN}"), (1, "denies {SYMPT}"),
    (1, "cont {THERAPY}"), (1, "full code"), (1, "lives alone , independent adls"),
    (1, "will monitor"), (1, "pt agrees w / plan"), (1, "{SYMPT} improved"), (1, "start {THERAPY}"),
)
FAMILY_CLAUSES: Dict[str, Clauses] = {
    "discharge": (
        (3, "admitted w / {DIS}"), (2, "discharged on {CHEM}"), (3, "discharged on {CHEM} {DOSE} {FREQ}"),
        (2, "hospital course c / b {DIS}"), (1, "s / p {PROC} {WHEN}"), (1, "dx : {DIS}"),
        (1, "tx w / iv {CHEM} , {DIS} resolved"), (1, "f / u for {TEST} in {NUM} wks"),
        (1, "d / c home , {DIS} improved"), (1, "dx : {DIS} , {DIS}"),
    ),
    "medication": (
        (5, "started on {CHEM} {DOSE} {FREQ}"), (3, "cont {CHEM}"), (3, "on {CHEM} {FREQ}"),
        (2, "{CHEM} {DOSE} {ROUTE} {FREQ}"), (2, "meds : {CHEM} , {CHEM}"), (1, "meds : {CHEM} , {CHEM} , {CHEM}"),
        (3, "increase to {DOSE} {FREQ}"), (1, "held {CHEM} for {DIS}"), (1, "switched {CHEM} to {CHEM}"),
        (1, "allergic to {CHEM}"), (1, "given {DOSE} {CHEM} {ROUTE} x1"), (1, "refill {CHEM}"),
        (2, "{DOSE} {ROUTE} {FREQ}"), (1, "dose : {DOSE}"), (1, "{DOSE} {FREQ} prn"), (1, "nkda"), (1, "good adherence to meds"),
    ),
    "problem": (
        (4, "hx of {DIS}"), (3, "pmh : {DIS} , {DIS}"), (1, "pmh : {DIS} , {DIS} , {DIS}"), (2, "# {DIS}"),
        (2, "{DIS} , stable on {CHEM}"), (1, "{DIS} , on {CHEM} {DOSE} {FREQ}"), (1, "h / o {DIS} s / p {PROC}"), (1, "fhx {DIS} in mother"),
        (1, "known {DIS}"), (1, "psh : {PROC}"), (1, "{DIS} well controlled"),
    ),
    "progress": (
        (3, "denies {DIS}"), (2, "no {DIS}"), (2, "pt c / o {DIS}"), (2, "c / o pain in {ANAT}"),
        (1, "tender {ANAT}"), (1, "crackles at {ANAT}"), (1, "{TEST} pending"), (1, "{TEST} wnl"),
        (1, "f / u {TEST}"), (1, "r / o {DIS}"), (1, "neg for {DIS}"), (1, "{ANAT} : {FIND}"),
        (1, "{DIS} worse despite {CHEM}"), (1, "{TEST} showed {DIS}"), (1, "plan {PROC} {WHEN}"),
        (1, "swelling of {ANAT}"), (2, "given {CHEM} {DOSE} {ROUTE}"), (1, "given {DOSE} {ROUTE} x1"), (1, "{CHEM} {DOSE} prn {SYMPT}"),
    ),
    "adverse": (
        (3, "{DIS} after {CHEM}"), (2, "{CHEM} stopped d / t {DIS}"), (2, "? {CHEM} induced {DIS}"),
        (1, "no rxn to {CHEM}"), (1, "{CHEM} dose reduced to {DOSE}"), (1, "dose reduced to {DOSE}"), (1, "rash on {ANAT} after {CHEM}"),
        (1, "{CHEM} held , {TEST} rechecked"), (1, "ae reported to pharmacy"), (1, "known se of {CHEM}"),
    ),
}
