"""Non-IID splits of one corpus across sites.

* ``dirichlet_label_split``: the per-class Dirichlet partition of Hsu et al. (2019), "Measuring the
  Effects of Non-Identical Data Distribution for Federated Visual Classification": for each class,
  site shares ~ Dir(alpha); small alpha concentrates a class on few sites.
* ``split_by_entity_mix``: for NER corpora, where a sentence has no single label: sentences are
  grouped by their dominant entity type and the suffix of its first name (so "-oma" diseases or
  "-mab" drugs travel together), each group has a home site, and a sentence goes home with
  probability ``skew``.
"""

import random
import zlib
from collections import Counter
from typing import Hashable, List, Optional, Sequence

import numpy as np

from flaretune.data.conll import entity_spans
from flaretune.data.types import Sentence

_SUFFIX_CHARS = 3


def _check_sites(n_items: int, n_sites: int) -> None:
    if n_sites < 1:
        raise ValueError(f"n_sites must be >= 1, got {n_sites}")
    if n_items < n_sites:
        raise ValueError(f"cannot give each of {n_sites} sites a share of {n_items} items")


def site_sizes(n_items: int, n_sites: int, sizes: Optional[Sequence[float]] = None) -> List[int]:
    """Item counts per site that sum to ``n_items``, each >= 1.

    ``sizes`` are relative weights (counts or fractions); by default site ``i`` weighs ``1 / (i + 1.5)``,
    so sites differ in size (3 sites: 49 %, 29 %, 21 %). Largest-remainder rounding.
    """
    _check_sites(n_items, n_sites)
    weights = [1.0 / (i + 1.5) for i in range(n_sites)] if sizes is None else [float(w) for w in sizes]
    if len(weights) != n_sites or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"sizes must be {n_sites} non-negative weights with a positive sum, got {sizes}")
    spare = n_items - n_sites  # one item per site first
    exact = [spare * w / sum(weights) for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(n_sites), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: spare - sum(counts)]:
        counts[i] += 1
    return [c + 1 for c in counts]


def entity_mix_key(sentence: Sentence, clusters_per_type: int) -> Hashable:
    """``(dominant type, suffix cluster)`` of a sentence, or ``None`` when it has no entity."""
    spans = entity_spans(sentence.tags)
    if not spans:
        return None
    counts = Counter(kind for kind, _, _ in spans)
    kind = min(counts, key=lambda k: (-counts[k], k))
    _, start, end = next(span for span in spans if span[0] == kind)
    head = sentence.tokens[end - 1].lower()[-_SUFFIX_CHARS:]
    return kind, zlib.crc32(head.encode("utf-8")) % clusters_per_type


def _home_sites(group_sizes: Counter, room: List[int], rng: random.Random) -> dict:
    """Largest group first, each to the site with the most room left (seeded tie order)."""
    groups = sorted(group_sizes)
    rng.shuffle(groups)
    groups.sort(key=lambda g: -group_sizes[g])
    left = list(room)
    home = {}
    for group in groups:
        site = max(range(len(left)), key=lambda i: left[i])
        home[group] = site
        left[site] -= group_sizes[group]
    return home


def split_by_entity_mix(
    sentences: Sequence[Sentence],
    n_sites: int,
    seed: int = 0,
    skew: float = 0.8,
    sizes: Optional[Sequence[float]] = None,
) -> List[List[Sentence]]:
    """Split an NER corpus so sites differ in entity mix; every sentence lands in exactly one site.

    Groups (see ``entity_mix_key``) get home sites so that each site's groups roughly fill it; in a
    seeded pass over the sentences, one goes to its group's home with probability ``skew`` if that
    site has room, otherwise to a site drawn in proportion to its remaining room. Sentences without
    entities have no home. ``skew=0`` is a random split. Site sizes follow
    ``site_sizes(len(sentences), n_sites, sizes)``.
    """
    if not 0.0 <= skew <= 1.0:
        raise ValueError(f"skew must be in [0, 1], got {skew}")
    room = site_sizes(len(sentences), n_sites, sizes)
    rng = random.Random(f"flaretune-entity-mix:{seed}")
    n_types = max(1, len({tag[2:] for s in sentences for tag in s.tags if tag != "O"}))
    # about two groups per site: every site gets a home group, and groups are small enough to pack
    clusters_per_type = 2 * -(-n_sites // n_types)
    keys = [entity_mix_key(s, clusters_per_type) for s in sentences]
    home = _home_sites(Counter(k for k in keys if k is not None), room, rng)

    order = list(range(len(sentences)))
    rng.shuffle(order)
    assigned: List[List[int]] = [[] for _ in range(n_sites)]
    for index in order:
        key = keys[index]
        site = home.get(key) if key is not None and rng.random() < skew else None
        if site is None or room[site] == 0:
            site = rng.choices(range(n_sites), weights=room)[0]
        room[site] -= 1
        assigned[site].append(index)
    return [[sentences[i] for i in sorted(indices)] for indices in assigned]


def dirichlet_proportions(n_classes: int, n_sites: int, alpha: float, seed: int) -> np.ndarray:
    """``(n_classes, n_sites)`` matrix; row ``c`` is class ``c``'s share per site, drawn from Dir(alpha)."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(n_sites, float(alpha)), size=n_classes)


def dirichlet_label_split(
    labels: Sequence[Hashable], n_sites: int, alpha: float, seed: int = 0
) -> List[List[int]]:
    """Indices per site; for each class its items are shared out by Dir(alpha) proportions.

    Smaller ``alpha`` gives more skewed label mixes (alpha -> inf approaches IID). When there are at
    least ``n_sites`` items every site gets at least one: an empty site takes an item from the
    largest site.
    """
    if n_sites < 1:
        raise ValueError(f"n_sites must be >= 1, got {n_sites}")
    classes = sorted(set(labels), key=repr)
    shares = dirichlet_proportions(len(classes), n_sites, alpha, seed)
    rng = np.random.default_rng([seed, 1])
    by_class = {c: [] for c in classes}
    for index, label in enumerate(labels):
        by_class[label].append(index)
    sites: List[List[int]] = [[] for _ in range(n_sites)]
    for c, share in zip(classes, shares):
        items = np.array(by_class[c])
        rng.shuffle(items)
        cuts = np.round(np.cumsum(share)[:-1] * len(items)).astype(int)
        for site, part in enumerate(np.split(items, cuts)):
            sites[site].extend(int(i) for i in part)
    if len(labels) >= n_sites:
        for site in range(n_sites):
            if not sites[site]:
                donor = max(range(n_sites), key=lambda s: len(sites[s]))
                sites[site].append(sites[donor].pop(int(rng.integers(len(sites[donor])))))
    return [sorted(indices) for indices in sites]
