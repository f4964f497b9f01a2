"""The SYNTHETIC bank messages (``make_bank(..., style="messages")``): label rule, shares, noise, surface noise."""

import random
import re
from itertools import combinations

import pytest

from flaretune.cli import main
from flaretune.data.bank_messages import (
    LABEL_NOISE, MESSAGE_INSTRUCTION, PRIOR, PRIOR_FLOOR, bank_messages, combine_scores, draw_message,
    label_for_score, message_label_mix, pooled_shares,
)
from flaretune.data.clinical_notes import quotas
from flaretune.data.finance import FIN_STYLES, default_train_size, make_bank, make_fin_dataset
from flaretune.data.instructions import read_instructions
from flaretune.data.site import load_site_fin_data
from flaretune.data.types import SENTIMENT_LABELS
from flaretune.errors import ConfigError

URL = re.compile(r"https?://\S+")
HANDLE = re.compile(r"(?:^|\s)@\w+")
TICKER = re.compile(r"\$[A-Za-z]{4}\b")


def _draws(n=1000, seed=0):
    rng = random.Random(seed)
    return [draw_message(rng.choice(SENTIMENT_LABELS), rng) for _ in range(n)]


def _pooled(n_total=3000, seed=0):
    """One train split per bank of 3, sized in proportion to the default sizes (400 : 250 : 150)."""
    sizes = quotas(n_total, [default_train_size(i) for i in range(3)])
    return [m for i, size in enumerate(sizes) for m in bank_messages(i, 3, seed, 0.5, size, "train")]


@pytest.mark.parametrize("score, label", [
    (2.0, "positive"), (1.0, "positive"), (0.5, "neutral"), (0.0, "neutral"), (-0.5, "neutral"),
    (-1.0, "negative"), (-2.5, "negative"),
])
def test_label_rule_thresholds(score, label):
    assert label_for_score(score) == label


def test_the_clause_after_but_dominates():
    # "beat on revenue (+2) but guidance cut (-2)": 0.5 * 2 - 2 = -1, negative
    assert combine_scores(2, -2, contrast=True) == -1.0 and label_for_score(-1.0) == "negative"
    # "raised fy guidance (+2) but not a great print (-1)": 0, neutral; joined by "and" it would be +1
    assert combine_scores(2, -1, contrast=True) == 0.0
    assert combine_scores(2, -1, contrast=False) == 1.0
    # a hedged strong cue (2 * 0.5) and a weak cue add: 1 + 1
    assert combine_scores(1.0, 1, contrast=False) == 2.0


def test_every_message_agrees_with_the_rule():
    for m in _pooled(600):
        assert label_for_score(m.score) == m.clean_label
        assert m.score * 4 == int(m.score * 4)  # scores are exact multiples of 1/4


def test_seeded_determinism():
    assert make_bank(1, seed=2, n_train=40, style="messages") == make_bank(1, seed=2, n_train=40, style="messages")
    assert make_bank(1, seed=2, n_train=40, style="messages") != make_bank(1, seed=3, n_train=40, style="messages")
    assert _draws(50, seed=4) == _draws(50, seed=4) != _draws(50, seed=5)


def test_compositional_not_a_template_list():
    texts = [text for text, _, _ in _draws(1000)]
    assert len(set(texts)) >= 990


def test_pooled_label_shares_match_the_prior():
    assert quotas(3000, [default_train_size(i) for i in range(3)]) == [1500, 938, 562]
    messages = _pooled(3000)
    clean = pooled_shares(messages, clean=True)
    noisy = pooled_shares(messages)
    for label, share in PRIOR.items():
        assert abs(clean[label] - share) < 0.002  # quotas of mixes that pool to the prior exactly
        assert abs(noisy[label] - share) < 0.05
    # 8 % flipped to one of the two other labels: about 0.5 * 0.92 + 0.5 * 0.08 / 2 = 0.48 negative
    assert abs(noisy["negative"] - 0.48) < 0.01


@pytest.mark.parametrize("n_sites, alpha, seed", [(3, 0.5, 0), (2, 0.01, 0), (5, 0.05, 1), (8, 100.0, 2)])
def test_mixes_pool_to_the_prior_at_default_sizes(n_sites, alpha, seed):
    weights = [default_train_size(i) for i in range(n_sites)]
    mixes = [message_label_mix(i, n_sites, seed=seed, alpha=alpha) for i in range(n_sites)]
    for label, share in PRIOR.items():
        pooled = sum(w * mix[label] for w, mix in zip(weights, mixes)) / sum(weights)
        assert pooled == pytest.approx(share, abs=1e-9)
        assert all(mix[label] >= PRIOR_FLOOR * share - 1e-12 for mix in mixes)
    assert all(sum(mix.values()) == pytest.approx(1.0, abs=1e-12) for mix in mixes)
    assert message_label_mix(0, 1) == pytest.approx(PRIOR, abs=1e-12)


def test_split_label_counts_are_quotas_of_the_mix():
    mix = message_label_mix(2, 3, seed=0, alpha=0.5)
    messages = bank_messages(2, 3, 0, 0.5, 150, "test")
    counts = [sum(m.clean_label == label for m in messages) for label in mix]
    assert counts == quotas(150, list(mix.values()))


def test_label_noise_is_exactly_the_documented_rate_on_train_only():
    assert LABEL_NOISE == 0.08
    train = bank_messages(0, 3, 0, 0.5, 400, "train")
    assert sum(m.label != m.clean_label for m in train) == 32  # round(0.08 * 400)
    assert all(m.label in SENTIMENT_LABELS for m in train)
    test = bank_messages(0, 3, 0, 0.5, 100, "test")
    assert all(m.label == m.clean_label for m in test)
    none = bank_messages(0, 3, 0, 0.5, 400, "train", label_noise=0.0)
    assert [m.text for m in none] == [m.text for m in train]  # noise changes labels, never texts
    assert all(m.label == m.clean_label for m in none)
    with pytest.raises(ValueError, match="label_noise"):
        bank_messages(0, 3, 0, 0.5, 10, "train", label_noise=1.5)


def test_surface_noise_rates():
    draws = _draws(1000)
    texts = [text for text, _, _ in draws]

    def rate(pred):
        return sum(map(pred, texts)) / len(texts)

    bare = [URL.sub("", t).strip() for t in texts]
    assert rate(lambda t: bool(URL.search(t))) > 0.2  # URL_RATE 0.25
    assert all(u.split("/")[2].endswith(".example") for t in texts for u in URL.findall(t))
    assert rate(lambda t: bool(HANDLE.search(t))) > 0.3  # HANDLE_RATE 0.35, plus @bank addressees
    assert rate(lambda t: bool(TICKER.search(t))) > 0.25
    assert rate(lambda t: "#" in t) > 0.2  # HASHTAG_RATE 0.25
    assert sum(b == b.upper() and any(c.isalpha() for c in b) for b in bare) / 1000 > 0.08  # UPPER_RATE 0.12
    assert sum(b == b.lower() for b in bare) / 1000 > 0.35  # LOWER_RATE 0.4 plus naturally lower-case
    assert sum(b != b.lower() and b != b.upper() for b in bare) / 1000 > 0.2  # sentence / mixed case
    assert sum(typo for _, _, typo in draws) / 1000 > 0.3  # TYPO_RATE 0.3 plus common misspellings
    assert rate(lambda t: bool(re.search(r"\b(q[1-4]|yoy|qoq|eps|pt|fy)\b", t.lower()))) > 0.15


def test_banks_are_non_iid():
    mixes = [message_label_mix(i, 3, seed=0, alpha=0.5) for i in range(3)]
    distances = [0.5 * sum(abs(a[k] - b[k]) for k in SENTIMENT_LABELS) for a, b in combinations(mixes, 2)]
    assert min(distances) > 0.05 and max(distances) > 0.15
    trains = [make_bank(i, style="messages")[0] for i in range(3)]
    assert [len(t) for t in trains] == [400, 250, 150]
    shares = [sum(e.output == "positive" for e in t) / len(t) for t in trains]
    assert max(shares) - min(shares) > 0.1


def test_make_bank_styles():
    assert FIN_STYLES == ("templates", "messages")
    assert make_bank(0, n_train=20) == make_bank(0, n_train=20, style="templates")
    train, test = make_bank(1, n_train=30, n_test=10, style="messages")
    assert (len(train), len(test)) == (30, 10)
    assert all(e.instruction == MESSAGE_INSTRUCTION and e.output in SENTIMENT_LABELS for e in train + test)
    with pytest.raises(ValueError, match="Invalid style 'prose'; valid: templates, messages"):
        make_bank(0, style="prose")
    with pytest.raises(ValueError, match="site_index"):
        make_bank(3, n_sites=3, style="messages")


def test_make_fin_dataset_messages_readme(tmp_path):
    paths = make_fin_dataset(tmp_path, n_sites=2, n_train=12, n_test=5, style="messages")
    assert len(paths) == 5 and paths[-1].name == "README.txt"
    readme = paths[-1].read_text(encoding="utf-8")
    assert readme.startswith("SYNTHETIC bank messages") and "style=messages" in readme and "8%" in readme
    assert len(read_instructions(tmp_path / "site-2" / "train.jsonl")) == 12


def test_cli_make_fin_messages(tmp_path, capsys):
    assert main(["data", "make", "fin", "--style", "messages", "--sites", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("wrote ") == 7 and "style=messages" in out
    assert (tmp_path / "README.txt").read_text(encoding="utf-8").startswith("SYNTHETIC")
    records = read_instructions(tmp_path / "site-3" / "train.jsonl")
    assert len(records) == 150 and records[0].instruction == MESSAGE_INSTRUCTION


def test_site_loader_passes_the_style():
    data = load_site_fin_data("site-2", synthetic_style="messages")
    assert (len(data.train), len(data.test)) == (250, 100)
    assert data.train[0].instruction == MESSAGE_INSTRUCTION and "style=messages" in data.source
    assert load_site_fin_data("site-2").train == make_bank(1)[0]


def test_executor_rejects_a_bad_style():
    from flaretune.executors.peft_causal import PeftCausalLMExecutor

    assert PeftCausalLMExecutor(synthetic_style="messages").synthetic_style == "messages"
    with pytest.raises(ConfigError) as info:
        PeftCausalLMExecutor(synthetic_style="prose")
    assert str(info.value) == "synthetic_style must be one of templates, messages, got 'prose'"
    assert "\n" not in str(info.value)
