"""Hospital specialties for the synthetic clinical data: which vocabulary and note types each one favours.

A specialty claims diseases by MeSH tree (C04 = Neoplasms, C14 = Cardiovascular Diseases, ...) or by
keyword, and chemicals by INN stem (``-tinib``, ``-olol``, ``-cillin`` ...; WHO "The use of stems in
the selection of International Nonproprietary Names"). Sites take specialties in this order, so
three hospitals are oncology, cardiology and neurology.
"""

from dataclasses import dataclass
from typing import Dict, Tuple

FAMILIES = ("discharge", "medication", "problem", "progress", "adverse")


@dataclass(frozen=True)
class Specialty:
    name: str
    mesh_trees: Tuple[str, ...]  # MeSH tree-number prefixes of its diseases
    disease_words: Tuple[str, ...]  # substrings of disease names (fallback when the tree says nothing)
    drug_suffixes: Tuple[str, ...]  # INN stems at the end of a word
    drug_prefixes: Tuple[str, ...]
    drug_words: Tuple[str, ...]  # well-known drugs whose names carry no stem
    family_weights: Dict[str, float]  # note types this department writes most

    def claims_disease(self, name: str, trees: Tuple[str, ...]) -> bool:
        return any(t.startswith(self.mesh_trees) for t in trees)

    def claims_disease_by_word(self, name: str) -> bool:
        return any(word in name for word in self.disease_words)

    def drug_claim(self, name: str) -> int:
        """How strongly this specialty claims a drug name: 0 none, else the length of the matched
        stem (a named drug counts most), so "pentostatin" goes to the oncology word, not ``-statin``."""
        best = 0
        for word in name.split():
            if word in self.drug_words:
                return 100
            best = max([best] + [len(s) for s in self.drug_suffixes if word.endswith(s)])
            best = max([best] + [len(p) for p in self.drug_prefixes if word.startswith(p)])
        return best


def _weights(**dominant: float) -> Dict[str, float]:
    rest = (1.0 - sum(dominant.values())) / (len(FAMILIES) - len(dominant))
    return {family: dominant.get(family, rest) for family in FAMILIES}


SPECIALTIES: Tuple[Specialty, ...] = (
    Specialty(
        "oncology", ("C04",),
        ("cancer", "carcinoma", "tumor", "tumour", "neoplasm", "lymphoma", "leukemia", "melanoma",
         "sarcoma", "myeloma", "blastoma", "metasta"),
        ("tumab", "tuzumab", "tuximab", "tinib", "platin", "rubicin", "taxel", "mustine", "fosfamide",
         "citabine", "uracil",
         "trexate", "poside", "tecan", "zomib", "ciclib", "parib", "lisib", "rafenib", "degib", "lutamide"),
        (),
        ("tamoxifen", "vincristine", "vinblastine", "bleomycin", "mitomycin", "busulfan", "hydroxyurea",
         "letrozole", "anastrozole", "exemestane", "pentostatin", "leucovorin", "dacarbazine", "temozolomide"),
        _weights(adverse=0.4, discharge=0.25),
    ),
    Specialty(
        "cardiology", ("C14",),
        ("heart", "cardiac", "cardio", "coronary", "hypertension", "hypotension", "arrhythmia", "atrial",
         "myocardial", "aortic", "angina", "tachycardia", "bradycardia", "thrombosis", "embolism"),
        ("olol", "pril", "prilat", "sartan", "statin", "dipine", "parin", "xaban", "gatran", "grel",
         "sentan", "semide", "thiazide", "tiazem", "cizumab", "ciximab"),
        (),
        ("amiodarone", "digoxin", "warfarin", "aspirin", "nitroglycerin", "isosorbide", "hydralazine",
         "spironolactone", "ivabradine", "ranolazine", "verapamil", "dobutamine", "milrinone",
         "adenosine", "heparin", "labetalol", "dronedarone", "sacubitril", "ezetimibe"),
        _weights(medication=0.4, discharge=0.25),
    ),
    Specialty(
        "neurology", ("C10", "F03"),
        ("epilep", "seizure", "neuro", "brain", "cerebral", "dementia", "parkinson", "alzheimer",
         "migraine", "headache", "palsy", "depress", "schizo", "ataxia", "convuls", "mental"),
        ("azepam", "azolam", "barbital", "oxetine", "triptan", "piprazole", "peridol", "apine", "gabalin",
         "racetam", "pramine", "triptyline", "giline", "pezil", "nemab", "neumab"),
        (),
        ("levodopa", "carbidopa", "valproate", "lamotrigine", "carbamazepine", "phenytoin", "topiramate",
         "lacosamide", "lithium", "baclofen", "memantine", "ropinirole", "pramipexole", "riluzole",
         "gabapentin", "amantadine", "sertraline", "citalopram", "escitalopram", "bupropion"),
        _weights(progress=0.4, problem=0.25),
    ),
    Specialty(
        "infectious", ("C01",),
        ("infection", "sepsis", "septic", "pneumonia", "tuberculosis", "hepatitis", "viral", "bacterial",
         "fungal", "fever", "abscess", "hiv"),
        ("cillin", "mycin", "micin", "floxacin", "cycline", "vir", "conazole", "fungin", "penem",
         "bactam", "oquine", "nidazole", "mectin", "bendazole", "vudine", "vimab", "virumab",
         "bacumab"),
        ("cef", "ceph", "sulfa"),
        ("vancomycin", "linezolid", "daptomycin", "rifampin", "isoniazid", "pyrazinamide", "ethambutol",
         "nitrofurantoin", "trimethoprim", "colistin"),
        _weights(problem=0.4, progress=0.25),
    ),
    Specialty(
        "pulmonology", ("C08",),
        ("lung", "pulmonary", "asthma", "respiratory", "bronch", "pleur"),
        ("terol", "sonide", "tropium", "lukast", "ilast"), (),
        ("theophylline", "prednisone", "pirfenidone", "nintedanib", "acetylcysteine"),
        _weights(progress=0.35, medication=0.3),
    ),
    Specialty(
        "gastroenterology", ("C06",),
        ("hepat", "liver", "bowel", "colitis", "gastr", "intestin", "pancrea", "esophag", "colon"),
        ("prazole", "tidine", "setron"), (),
        ("mesalamine", "loperamide", "lactulose", "ursodiol", "sucralfate", "metoclopramide", "rifaximin"),
        _weights(discharge=0.35, problem=0.3),
    ),
    Specialty(
        "endocrinology", ("C18", "C19"),
        ("diabet", "thyroid", "glyc", "metabolic", "obesity", "adrenal", "pituitar"),
        ("gliptin", "gliflozin", "glutide", "glinide", "formin", "glitazone"), ("insulin",),
        ("levothyroxine", "liothyronine", "methimazole", "propylthiouracil", "hydrocortisone",
         "glipizide", "glyburide", "glimepiride"),
        _weights(medication=0.4, problem=0.25),
    ),
    Specialty(
        "nephrology", ("C12", "C13"),
        ("kidney", "renal", "nephr", "urinary", "bladder", "prostat"),
        ("vaptan", "osin", "asteride"), (),
        ("sevelamer", "cinacalcet", "calcitriol", "epoetin", "oxybutynin", "patiromer"),
        _weights(progress=0.35, adverse=0.3),
    ),
    Specialty(
        "rheumatology", ("C05", "C20", "C17"),
        ("arthritis", "lupus", "gout", "osteo", "skin", "dermat", "psoria", "autoimmune"),
        ("profen", "coxib", "fenac", "limus", "dronate", "limumab", "lizumab", "liximab"), (),
        ("prednisolone", "allopurinol", "colchicine", "febuxostat", "sulfasalazine", "leflunomide",
         "azathioprine", "cyclosporine", "naproxen", "celecoxib"),
        _weights(medication=0.35, adverse=0.3),
    ),
)


def specialty_for_site(site_index: int) -> Specialty:
    """Site ``i`` gets ``SPECIALTIES[i % len(SPECIALTIES)]``; with more sites than specialties they repeat."""
    return SPECIALTIES[site_index % len(SPECIALTIES)]
