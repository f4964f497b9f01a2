"""Partition the lexicons into one vocabulary pool per site, by the site's specialty.

Every name belongs to exactly one site's pool. Among the specialties in play, a disease goes to the
first (in ``SPECIALTIES`` order) whose MeSH trees hold it, else the first whose keyword it contains;
a chemical goes to the one with the longest matching INN stem (a named drug beats any stem). Names
nobody claims are spread by a CRC32 hash of the name. Claimed names, and well-known ones, rank first
and are drawn most often (Zipf-like weights), so each hospital's frequent vocabulary is its own
specialty's.
"""

import random
import zlib
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from flaretune.data.lexicon import LexiconEntry, load_lexicon
from flaretune.data.specialties import SPECIALTIES, Specialty, specialty_for_site

# Weight of rank r is (r + offset) ** -exponent: about half of a site's test mentions were seen in
# its own training split and 10-20 % in another site's, so names repeat like in real notes
# while most of the vocabulary is a long tail the model must generalise to.
_ZIPF_OFFSET = 3.0
_ZIPF_EXPONENT = 1.2
# picks the specialty (among the active ones, in order) that owns an entry, or None
Claim = Callable[[Sequence[Specialty], LexiconEntry], Optional[Specialty]]


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


@dataclass(frozen=True)
class Pool:
    """Names (as token tuples) with cumulative draw weights."""

    entries: Tuple[Tuple[str, ...], ...]
    cum_weights: Tuple[float, ...]

    @classmethod
    def ranked(cls, entries: Sequence[Tuple[str, ...]]) -> "Pool":
        weights = ((r + _ZIPF_OFFSET) ** -_ZIPF_EXPONENT for r in range(len(entries)))
        return cls(tuple(entries), tuple(accumulate(weights)))

    def draw(self, rng: random.Random) -> Tuple[str, ...]:
        return rng.choices(self.entries, cum_weights=self.cum_weights)[0]

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class SitePools:
    specialty: Specialty
    chemicals: Pool
    diseases: Pool


def _owners(n_sites: int) -> Dict[str, List[int]]:
    owners: Dict[str, List[int]] = {}
    for site in range(n_sites):
        owners.setdefault(specialty_for_site(site).name, []).append(site)
    return owners


def _partition(
    entries: Sequence[LexiconEntry],
    n_sites: int,
    claim_order: Sequence[Claim],
) -> List[Pool]:
    owners = _owners(n_sites)
    active = [s for s in SPECIALTIES if s.name in owners]
    ranked: List[List[Tuple[Tuple[int, int], Tuple[str, ...]]]] = [[] for _ in range(n_sites)]
    for entry in entries:
        h = _crc(entry.text)
        specialty: Optional[Specialty] = None
        for claim in claim_order:
            specialty = claim(active, entry)
            if specialty is not None:
                break
        if specialty is None:
            site, tier = h % n_sites, 2
        else:
            sites = owners[specialty.name]
            site, tier = sites[h % len(sites)], 0
        tier += 0 if entry.well_known else 1
        ranked[site].append(((tier, h), entry.tokens))
    return [Pool.ranked([tokens for _, tokens in sorted(pool)]) for pool in ranked]


def _strongest_drug_claim(active: Sequence[Specialty], entry: LexiconEntry) -> Optional[Specialty]:
    score, neg_index = max((s.drug_claim(entry.text), -i) for i, s in enumerate(active))
    return active[-neg_index] if score else None


def _first_claim(test: Callable[[Specialty, LexiconEntry], bool]) -> Claim:
    return lambda active, entry: next((s for s in active if test(s, entry)), None)


@lru_cache(maxsize=8)
def site_pools(n_sites: int) -> Tuple[SitePools, ...]:
    """One chemical and one disease pool per site; cached per ``n_sites``."""
    if n_sites < 1:
        raise ValueError(f"n_sites must be >= 1, got {n_sites}")
    lexicon = load_lexicon()
    chemicals = _partition(lexicon.chemicals, n_sites, [_strongest_drug_claim])
    diseases = _partition(
        lexicon.diseases,
        n_sites,
        [
            _first_claim(lambda s, e: s.claims_disease(e.text, e.mesh_trees)),
            _first_claim(lambda s, e: s.claims_disease_by_word(e.text)),
        ],
    )
    return tuple(
        SitePools(specialty_for_site(i), chemicals[i], diseases[i]) for i in range(n_sites)
    )
