"""Sentence templates for the synthetic clinical notes, grouped by note type (family).

``{CHEM}`` and ``{DIS}`` are entity slots filled from the lexicon pools; the other ``{SLOTS}`` are
filled from ``FILLERS`` and tagged ``O``, among them therapies and normal findings that stand where a
chemical or disease would, so a tagger cannot rely on context alone. Tokens are separated by spaces
as they will be tokenised; punctuation stands alone. Every family holds entity-free sentences, and
negated findings ("denies chest pain") keep their Disease tag, as in BC5CDR (Li et al., 2016).
Filler words avoid names BC5CDR would tag (no "alcohol", "oxygen", "potassium" ...).
"""

from typing import Dict, Tuple

ENTITY_SLOTS = {"{CHEM}": "Chemical", "{DIS}": "Disease"}

TEMPLATES: Dict[str, Tuple[str, ...]] = {
    "discharge": (
        "The patient is a {AGE} - year - old {SEX} with a history of {DIS} who was admitted with {DIS} .",
        "{SEX_CAP} was discharged home on {CHEM} {DOSE} {FREQ} .",
        "Discharge diagnoses : {DIS} and {DIS} .",
        "He was treated with intravenous {CHEM} and the {DIS} resolved over {NUM} days .",
        "Hospital course was complicated by {DIS} , which was managed with {CHEM} .",
        "She was admitted with {DIS} and started on {CHEM} and {CHEM} .",
        "At discharge the {DIS} had improved and {CHEM} was tapered .",
        "Principal diagnosis : {DIS} ; secondary diagnosis : {DIS} .",
        "Follow - up with {CLINIC} clinic in {NUM} weeks .",
        "Discharge condition : stable ; diet as tolerated .",
        "Admitted for elective {SURGERY} ; the postoperative course was uneventful .",
        "She was discharged home with {THERAPY} and {CHEM} {DOSE} {FREQ} .",
    ),
    "medication": (
        "Medications : {CHEM} {DOSE} {FREQ} , {CHEM} {DOSE} {FREQ} .",
        "Continue {CHEM} {DOSE} {ROUTE} {FREQ} .",
        "Start {CHEM} {DOSE} {FREQ} for {DIS} .",
        "{CHEM} was held because of {DIS} .",
        "Home medications include {CHEM} , {CHEM} and {CHEM} .",
        "Switched from {CHEM} to {CHEM} because of poor tolerance .",
        "Increase {CHEM} to {DOSE} {FREQ} and recheck {LAB} in {NUM} days .",
        "Allergies : {CHEM} .",
        "No known drug allergies .",
        "Patient reports good adherence to the current regimen .",
        "Refill sent to the pharmacy for {NUM} days .",
        "Continue {THERAPY} {FREQ} .",
        "Start {THERAPY} for {DIS} .",
    ),
    "problem": (
        "Problem list : {DIS} , {DIS} , {DIS} .",
        "{NUM} . {DIS} - stable on {CHEM} .",
        "Past medical history is significant for {DIS} and {DIS} .",
        "Active problems include {DIS} .",
        "History of {DIS} , status post {SURGERY} .",
        "Family history of {DIS} in her mother .",
        "{DIS} , well controlled on {CHEM} {DOSE} {FREQ} .",
        "Past surgical history : {SURGERY} .",
        "Social history : lives with family and works as a {JOB} .",
        "Immunizations are up to date .",
        "{DIS} , managed with {THERAPY} .",
    ),
    "progress": (
        "Patient denies {DIS} , {DIS} or {DIS} .",
        "No evidence of {DIS} on {PROC} .",
        "{DIS} was ruled out .",
        "Symptoms of {DIS} improved after {NUM} days of {CHEM} .",
        "Today he reports worsening {DIS} despite {CHEM} .",
        "Assessment : {DIS} , likely secondary to {DIS} .",
        "Plan : continue {CHEM} and monitor {LAB} .",
        "Negative for {DIS} .",
        "Vital signs are stable and the patient is resting comfortably .",
        "{PROC} was reviewed with the patient today .",
        "Labs notable for {LAB} of {NUM} .",
        "Exam notable for {FINDING} .",
        "Today he reports {FINDING} and {DIS} .",
    ),
    "adverse": (
        "{CHEM} - induced {DIS} was suspected .",
        "The patient developed {DIS} after starting {CHEM} .",
        "{CHEM} was discontinued because of {DIS} .",
        "Adverse event : {DIS} , possibly related to {CHEM} .",
        "{DIS} is a known side effect of {CHEM} .",
        "Rechallenge with {CHEM} led to recurrent {DIS} .",
        "No adverse reactions to {CHEM} were observed .",
        "The dose of {CHEM} was reduced after an episode of {DIS} .",
        "The event was reported to the pharmacovigilance team .",
        "Causality was assessed as {CAUSALITY} .",
        "{THERAPY} was stopped because of {DIS} .",
    ),
}

FILLERS: Dict[str, Tuple[str, ...]] = {
    "{DOSE}": ("5 mg", "10 mg", "20 mg", "40 mg", "81 mg", "250 mg", "500 mg", "1 g", "2.5 mg", "0.5 mg",
               "100 mcg", "10 units"),
    "{FREQ}": ("daily", "twice daily", "every 8 hours", "at bedtime", "as needed", "once weekly", "BID",
               "TID", "q6h"),
    "{ROUTE}": ("orally", "IV", "subcutaneously", "by mouth", "intramuscularly"),
    "{NUM}": tuple(str(n) for n in range(2, 15)),
    "{AGE}": tuple(str(n) for n in range(19, 93, 3)),
    "{SEX}": ("man", "woman", "male", "female"),
    "{SEX_CAP}": ("He", "She", "The patient"),
    "{PROC}": ("CT scan", "MRI", "chest x-ray", "echocardiogram", "colonoscopy", "lumbar puncture",
               "bone marrow biopsy", "EEG", "cardiac catheterization", "ultrasound", "bronchoscopy"),
    "{SURGERY}": ("appendectomy", "cholecystectomy", "hip replacement", "coronary bypass", "tonsillectomy",
                  "hernia repair", "knee arthroscopy"),
    "{CLINIC}": ("primary care", "cardiology", "oncology", "neurology", "nephrology", "surgery"),
    "{LAB}": ("blood pressure", "INR", "platelet count", "white cell count", "ejection fraction",
              "heart rate", "liver enzymes", "renal function"),
    "{JOB}": ("teacher", "nurse", "driver", "farmer", "engineer", "cashier"),
    "{CAUSALITY}": ("possible", "probable", "unlikely", "certain"),
    # untagged look-alikes in the slots where chemicals and diseases usually stand
    "{THERAPY}": ("physical therapy", "dialysis", "radiotherapy", "wound care", "compression stockings",
                  "cardiac rehabilitation", "speech therapy", "CPAP", "bed rest", "occupational therapy"),
    "{FINDING}": ("normal sinus rhythm", "good appetite", "clear lung fields", "regular heart sounds",
                  "intact sensation", "steady gait", "normal bowel sounds", "improved mobility"),
}
