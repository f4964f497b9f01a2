import random
import re
from collections import Counter
from itertools import combinations

import pytest

from flaretune.data.finance import label_mix, make_bank, make_fin_dataset, statement
from flaretune.data.finance_templates import STATEMENTS
from flaretune.data.instructions import read_instructions
from flaretune.data.types import SENTIMENT_INSTRUCTION, SENTIMENT_LABELS


def test_records_are_sentiment_instructions():
    train, test = make_bank(0)
    assert (len(train), len(test)) == (400, 100)
    assert [len(make_bank(i)[0]) for i in range(3)] == [400, 250, 150]
    for e in train + test:
        assert e.instruction == SENTIMENT_INSTRUCTION
        assert e.output in SENTIMENT_LABELS
        assert "{" not in e.input and len(e.input.split()) >= 5


def test_deterministic_by_seed():
    assert make_bank(1, seed=2, n_train=30) == make_bank(1, seed=2, n_train=30)
    assert make_bank(1, seed=2, n_train=30) != make_bank(1, seed=3, n_train=30)


def test_many_templates():
    assert all(len(templates) >= 12 for templates in STATEMENTS.values())
    inputs = {e.input.split()[2] for e in make_bank(0)[0]}
    assert len(inputs) > 20


def test_figures_agree_with_the_label():
    rng = random.Random(0)
    move = re.compile(r"(increased|fell|narrowed its operating loss|widened) to \w+ ([\d.]+) million from \w+ ([\d.]+)")
    seen = 0
    for label in ("positive", "negative"):
        for _ in range(400):
            match = move.search(statement(label, rng))
            if match:
                verb, new, old = match.group(1), float(match.group(2)), float(match.group(3))
                assert (new > old) == (verb in ("increased", "widened")), match.group(0)
                seen += 1
    assert seen > 20


def _spread(alpha, n_sites=4):
    """Mean total-variation distance between banks' label mixes."""
    mixes = [label_mix(i, n_sites, seed=0, alpha=alpha) for i in range(n_sites)]
    return sum(0.5 * sum(abs(a[k] - b[k]) for k in SENTIMENT_LABELS) for a, b in combinations(mixes, 2)) / 6


def test_alpha_controls_label_skew():
    assert _spread(0.1) > 3 * _spread(100.0)
    for i in range(3):
        mix = label_mix(i, 3, alpha=0.05)
        assert abs(sum(mix.values()) - 1) < 1e-9 and min(mix.values()) >= 0.05


def test_train_labels_follow_the_bank_mix():
    train, _ = make_bank(1, alpha=0.3, n_train=2000)
    counts = Counter(e.output for e in train)
    for label, p in label_mix(1, alpha=0.3).items():
        assert counts[label] / 2000 == pytest.approx(p, abs=0.04)


def test_dataset_files(tmp_path):
    paths = make_fin_dataset(tmp_path, n_sites=2, seed=1, alpha=0.5, n_train=12, n_test=4)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "site-1/train.jsonl", "site-1/test.jsonl", "site-2/train.jsonl", "site-2/test.jsonl", "README.txt"]
    assert read_instructions(paths[2]) == make_bank(1, 2, seed=1, alpha=0.5, n_train=12, n_test=4)[0]
    assert "SYNTHETIC" in paths[-1].read_text(encoding="utf-8")
