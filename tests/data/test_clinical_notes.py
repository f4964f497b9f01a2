from collections import Counter
from itertools import combinations

import pytest

from flaretune.compare.data import prepare_ner
from flaretune.data import clinical_notes, clinical_notes_vocab
from flaretune.data.clinical import labels_for_style, make_clinical_dataset, make_hospital
from flaretune.data.clinical_notes import ENTITY_COUNT_MIX, make_notes_hospital, quotas, strict_spans
from flaretune.data.conll import read_conll
from flaretune.data.types import CLINICAL_LABELS, CLINICAL_NOTES_LABELS
from flaretune.errors import ConfigError

TYPES = ["Chemical", "Disease", "Procedure", "Anatomy", "Test", "Dosage"]


@pytest.fixture(scope="module")
def hospitals():
    return [make_hospital(i) for i in range(3)]


def _kinds(sentences):
    return Counter(kind for s in sentences for kind, _, _ in strict_spans(s.tags))


def _clean(site, n_train=200, n_test=60, **kw):
    return make_notes_hospital(site, 3, 0, 0.8, n_train, n_test, **kw)


def test_label_list():
    assert CLINICAL_NOTES_LABELS == ["O"] + [f"{p}-{t}" for t in TYPES for p in "BI"]
    assert CLINICAL_LABELS == ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
    assert labels_for_style("notes") == CLINICAL_NOTES_LABELS and labels_for_style("templates") == CLINICAL_LABELS


def test_notes_is_the_default_style_and_sizes_differ(hospitals):
    assert [(len(train), len(test)) for train, test in hospitals] == [(360, 60), (240, 60), (140, 60)]
    assert make_hospital(0, n_train=20, n_test=5) == make_hospital(0, n_train=20, n_test=5, style="notes")
    assert make_hospital(0, n_train=20, n_test=5) != make_hospital(0, n_train=20, n_test=5, style="templates")


def test_deterministic_by_seed():
    assert make_hospital(1, seed=5, n_train=40) == make_hospital(1, seed=5, n_train=40)
    assert make_hospital(1, seed=5, n_train=40) != make_hospital(1, seed=6, n_train=40)
    assert make_hospital(1, seed=5, n_train=40)[1] == make_hospital(1, seed=5, n_train=10)[1]


def test_tags_are_valid_iob2_over_six_types(hospitals):
    sentences = [s for train, test in hospitals for s in train + test]
    for s in sentences:
        assert set(s.tags) <= set(CLINICAL_NOTES_LABELS)
        assert all(not t.startswith("I-") or p[2:] == t[2:] for p, t in zip(["O"] + s.tags, s.tags))
    assert set(_kinds(sentences)) == set(TYPES)


def test_quotas_are_largest_remainder():
    assert quotas(10, ENTITY_COUNT_MIX) == [5, 3, 1, 1]
    assert quotas(200, ENTITY_COUNT_MIX) == [90, 70, 28, 12]
    assert quotas(0, ENTITY_COUNT_MIX) == [0, 0, 0, 0]


@pytest.mark.parametrize("site", [0, 2])
def test_entities_per_sentence_follow_the_mix_exactly(site):
    train, test = _clean(site, label_noise=0.0)
    for split, n in ((train, 200), (test, 60)):
        per_sentence = Counter(len(strict_spans(s.tags)) for s in split)
        assert [per_sentence[k] for k in range(4)] == quotas(n, ENTITY_COUNT_MIX)
    # entity-free sentences are the most common kind: 45 %
    assert Counter(len(strict_spans(s.tags)) for s in train)[0] == 90


def test_type_frequencies_are_imbalanced(hospitals):
    counts = _kinds([s for train, test in hospitals for s in train + test])
    total = sum(counts.values())
    assert min(counts["Chemical"], counts["Disease"]) > counts["Dosage"] > counts["Anatomy"]
    assert counts["Anatomy"] > max(counts["Test"], counts["Procedure"])
    for rare in ("Procedure", "Test"):
        assert counts[rare] / total < 0.06 and counts["Chemical"] > 5 * counts[rare]


def test_misspellings_are_exact_and_single_edits():
    clean_train, clean_test = _clean(1, typo_rate=0.0, label_noise=0.0)
    typo_train, typo_test = _clean(1, label_noise=0.0)
    for clean, typo in ((clean_train, typo_train), (clean_test, typo_test)):
        eligible = sum(t.isalpha() and len(t) >= 4 for s in clean for t in s.tokens)
        changed = [(a, b) for c, t in zip(clean, typo) for a, b in zip(c.tokens, t.tokens) if a != b]
        assert len(changed) == round(clinical_notes.DEFAULT_TYPO_RATE * eligible) > 0
        assert [c.tags for c in clean] == [t.tags for t in typo]
        for a, b in changed:
            swapped = len(a) == len(b) and sorted(a) == sorted(b)
            dropped = len(b) == len(a) - 1 and any(a[:i] + a[i + 1:] == b for i in range(1, len(a)))
            assert swapped or dropped, (a, b)
    entity_words = [a for c, t in zip(clean_train, typo_train) for a, b, tag in zip(c.tokens, t.tokens, c.tags)
                    if a != b and tag != "O"]
    assert entity_words  # entity names are misspelt too, not only context words


def test_label_noise_is_exact_and_train_only():
    clean_train, clean_test = _clean(0, label_noise=0.0)
    noisy_train, noisy_test = _clean(0)
    assert noisy_test == clean_test  # test splits stay clean
    assert [s.tokens for s in clean_train] == [s.tokens for s in noisy_train]
    n_entities = sum(len(strict_spans(s.tags)) for s in clean_train)
    total = round(clinical_notes.DEFAULT_LABEL_NOISE * n_entities)
    missing = boundary = 0
    for clean, noisy in zip(clean_train, noisy_train):
        noisy_spans = strict_spans(noisy.tags)
        for kind, b, e in set(strict_spans(clean.tags)) - set(noisy_spans):
            moved = [(k, nb, ne) for k, nb, ne in noisy_spans if nb == b]
            if moved:
                assert moved[0][0] == kind and abs(moved[0][2] - e) == 1
                boundary += 1
            else:
                assert noisy.tags[b:e] == ["O"] * (e - b)
                missing += 1
    assert (missing, boundary) == (round(0.6 * total), total - round(0.6 * total))
    assert boundary > 0


def test_note_style(hospitals):
    sentences = [s for train, test in hospitals for s in train + test]
    words = Counter(t for s in sentences for t in s.tokens)
    assert sum(s.tokens[0][:1].islower() or not s.tokens[0][:1].isalpha() for s in sentences) / len(sentences) > 0.7
    for abbreviation in ("c", "o", "htn", "bid", "pt", "s", "p"):
        assert words[abbreviation] > 0, abbreviation
    tagged = Counter((t, tag) for s in sentences for t, tag in zip(s.tokens, s.tags))
    assert sum(tagged[(a, "B-Disease")] for a in clinical_notes_vocab.DISEASE_ABBREVIATIONS) > 20
    assert sum(tagged[(v, "O")] for v in ("mg", "bp", "hr")) > 0 and tagged[("mg", "I-Dosage")] > 0


def test_sites_differ():
    def vocab(skew):
        return [{t for s in make_hospital(i, skew=skew, n_train=200)[0] for t, tag in zip(s.tokens, s.tags)
                 if tag != "O"} for i in range(3)]

    def overlap(sets):
        return sum(len(a & b) / len(a | b) for a, b in combinations(sets, 2)) / 3

    assert overlap(vocab(0.0)) > overlap(vocab(0.8)) > overlap(vocab(1.0))
    # note mix: cardiology writes medication lists, neurology progress notes (exams, tests)
    mixes = [_kinds(make_hospital(i, n_train=300)[0]) for i in range(3)]
    share = [{k: v / sum(m.values()) for k, v in m.items()} for m in mixes]
    assert share[1]["Chemical"] > 1.4 * share[2]["Chemical"]
    assert share[2]["Anatomy"] + share[2]["Test"] > 2 * (share[0]["Anatomy"] + share[0]["Test"])


def test_headers_and_readme_say_synthetic(tmp_path):
    paths = make_clinical_dataset(tmp_path, n_sites=2, seed=3, n_train=20, n_test=5)
    header = paths[0].read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("# SYNTHETIC clinical NER data generated by flaretune (seed=3, site=site-1, ")
    assert "style=notes" in header and "not real patient text" in header
    readme = paths[-1].read_text(encoding="utf-8")
    assert readme.startswith("SYNTHETIC clinical NER notes") and "style=notes" in readme
    assert read_conll(paths[2]) == make_hospital(1, n_sites=2, seed=3, n_train=20, n_test=5)[0]
    for module in (clinical_notes, clinical_notes_vocab):
        assert module.__doc__.startswith("SYNTHETIC") or "SYNTHETIC" in module.__doc__.splitlines()[0]


def test_bad_style_and_rates():
    with pytest.raises(ValueError, match="Invalid style 'prose'; valid: notes, templates"):
        make_hospital(0, style="prose")
    with pytest.raises(ValueError, match="typo_rate must be in"):
        make_notes_hospital(0, 3, 0, 0.8, 5, 5, typo_rate=1.5)


def test_compare_prepare_returns_the_style_labels(tmp_path):
    notes = prepare_ner(tmp_path / "a", 2, 0, 0.8, None, None)
    templates = prepare_ner(tmp_path / "b", 2, 0, 0.8, None, None, style="templates")
    assert notes.labels == CLINICAL_NOTES_LABELS and templates.labels == CLINICAL_LABELS
    assert "style=notes" in notes.description
    with pytest.raises(ConfigError, match="Invalid synthetic style 'prose'"):
        prepare_ner(tmp_path / "c", 2, 0, 0.8, None, None, style="prose")
