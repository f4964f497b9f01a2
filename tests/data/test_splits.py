import random
from collections import Counter
from itertools import combinations

import numpy as np
import pytest

from flaretune.data.conll import entities
from flaretune.data.splits import dirichlet_label_split, site_sizes, split_by_entity_mix
from flaretune.data.types import Sentence

STEMS = ["cap", "lor", "ven", "dor", "mix", "tal", "fen", "bri", "sol", "nal", "rox", "pel"]
ENDINGS = {"Chemical": ["mab", "olol", "cillin", "pril", "tinib", "azepam"],
           "Disease": ["oma", "itis", "emia", "osis", "algia", "pathy"]}


def _corpus(n=600, seed=1):
    rng = random.Random(seed)
    sentences = []
    for i in range(n):
        kind = rng.choice(["Chemical", "Disease", None])
        if kind is None:
            sentences.append(Sentence(["no", "findings", str(i)], ["O", "O", "O"]))
            continue
        name = rng.choice(STEMS) + rng.choice(STEMS) + rng.choice(ENDINGS[kind])
        sentences.append(Sentence(["note", str(i), name, "."], ["O", "O", f"B-{kind}", "O"]))
    return sentences


def test_site_sizes():
    assert site_sizes(100, 3) == [49, 30, 21]
    assert site_sizes(3, 3) == [1, 1, 1]
    assert site_sizes(10, 2, sizes=[1, 1]) == [5, 5]
    assert site_sizes(10, 2, sizes=[0.0, 1.0]) == [1, 9]
    with pytest.raises(ValueError):
        site_sizes(2, 3)
    with pytest.raises(ValueError):
        site_sizes(10, 2, sizes=[1])


def test_entity_mix_split_is_a_partition_with_uneven_sizes():
    corpus = _corpus()
    parts = split_by_entity_mix(corpus, 3, seed=0)
    assert [len(p) for p in parts] == site_sizes(len(corpus), 3)
    ids = Counter(id(s) for part in parts for s in part)
    assert len(ids) == len(corpus) and set(ids.values()) == {1}
    assert split_by_entity_mix(corpus, 3, seed=0) == parts
    assert split_by_entity_mix(corpus, 3, seed=1) != parts
    assert [len(p) for p in split_by_entity_mix(corpus, 2, sizes=[1, 3])] == [151, 449]


def test_entity_mix_skew_makes_sites_differ():
    corpus = _corpus()

    def mean_distance(skew):
        """Mean total-variation distance between sites' distributions of name endings."""
        endings = [Counter(text[-4:] for s in part for _, text in entities(s))
                   for part in split_by_entity_mix(corpus, 3, skew=skew)]
        distances = []
        for a, b in combinations(endings, 2):
            na, nb = sum(a.values()), sum(b.values())
            distances.append(0.5 * sum(abs(a[k] / na - b[k] / nb) for k in set(a) | set(b)))
        return np.mean(distances)

    assert mean_distance(1.0) > mean_distance(0.5) > mean_distance(0.0)
    assert mean_distance(1.0) > 0.8 > 0.3 > mean_distance(0.0)


def test_entity_mix_too_few_sentences():
    with pytest.raises(ValueError):
        split_by_entity_mix(_corpus(2), 3)


def _skew(labels, parts):
    """Mean total-variation distance between each site's label mix and the global mix."""
    labels = np.array(labels)
    classes = sorted(set(labels))
    overall = np.array([np.mean(labels == c) for c in classes])
    tvs = [0.5 * np.abs(np.array([np.mean(labels[p] == c) for c in classes]) - overall).sum() for p in parts if p]
    return float(np.mean(tvs))


def test_dirichlet_split_partition_and_skew():
    labels = [i % 3 for i in range(900)]
    small = dirichlet_label_split(labels, 4, alpha=0.1, seed=0)
    large = dirichlet_label_split(labels, 4, alpha=100.0, seed=0)
    for parts in (small, large):
        assert sorted(i for p in parts for i in p) == list(range(900))
        assert all(parts)
    assert dirichlet_label_split(labels, 4, alpha=0.1, seed=0) == small
    assert dirichlet_label_split(labels, 4, alpha=0.1, seed=1) != small
    small_skews = [_skew(labels, dirichlet_label_split(labels, 4, 0.1, seed)) for seed in range(3)]
    large_skews = [_skew(labels, dirichlet_label_split(labels, 4, 100.0, seed)) for seed in range(3)]
    assert min(small_skews) > 3 * max(large_skews)


def test_dirichlet_split_fills_every_site_when_possible():
    parts = dirichlet_label_split(["a", "a", "b", "c", "c"], 5, alpha=0.01, seed=0)
    assert sorted(len(p) for p in parts) == [1, 1, 1, 1, 1]
    parts = dirichlet_label_split(["a", "b"], 3, alpha=1.0, seed=0)
    assert sorted(i for p in parts for i in p) == [0, 1]
    with pytest.raises(ValueError):
        dirichlet_label_split(["a"], 2, alpha=0.0, seed=0)
