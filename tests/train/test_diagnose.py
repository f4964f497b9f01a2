import pytest
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from flaretune.train import ner
from flaretune.train.diagnose import (
    COLLAPSE_PREFIX,
    collapse_warning,
    entity_counts,
    loss_plateaued,
    strict_spans,
)

GOLD = [
    ["B-Chemical", "I-Chemical", "O", "B-Disease"],
    ["O", "O", "O"],
    ["B-Dosage", "I-Dosage", "B-Dosage", "O", "B-Test"],
]


@pytest.mark.parametrize(
    "tags, spans",
    [
        (["O", "O"], []),
        (["B-X", "I-X", "O", "B-Y"], [("X", 0, 2), ("Y", 3, 4)]),
        (["B-X", "B-X"], [("X", 0, 1), ("X", 1, 2)]),
        (["O", "I-X", "I-X"], []),  # a stray I- starts nothing in strict IOB2
        (["B-X", "I-Y", "I-Y"], [("X", 0, 1)]),
        (["B-X", "I-X", "I-X"], [("X", 0, 3)]),
    ],
)
def test_strict_spans(tags, spans):
    assert strict_spans(tags) == spans


def test_entity_counts_are_exact_on_hand_made_tags():
    predicted = [
        ["B-Chemical", "O", "O", "B-Disease"],
        ["O", "I-Disease", "O"],  # not an entity
        ["O", "O", "O", "O", "O"],
    ]
    assert entity_counts(GOLD, predicted) == (5, 2)
    assert entity_counts(GOLD, [["O"] * len(s) for s in GOLD]) == (5, 0)


def test_counts_match_seqeval_support():
    odd = [["I-X", "I-X", "B-X", "I-Y", "B-Y", "I-Y", "O", "I-X"]]
    for tags in (GOLD, odd):
        report = classification_report(tags, tags, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
        support = sum(v["support"] for k, v in report.items() if not k.endswith(" avg"))
        assert entity_counts(tags, tags) == (support, support)


def test_counts_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="3 gold sentences but 1 predicted"):
        entity_counts(GOLD, [["O"]])


def test_warning_fires_on_all_O_prediction():
    scores = ner.entity_scores(GOLD, [["O"] * len(s) for s in GOLD])
    assert (scores["n_gold"], scores["n_predicted"], scores["f1"]) == (5, 0, 0.0)
    assert scores["collapse"].startswith(
        f"{COLLAPSE_PREFIX} the model predicts no entity on a test set with 5 (it tags every word 'O'); likely causes:"
    )
    assert "learning rate" in scores["collapse"] and "label set" in scores["collapse"]
    assert "\n" not in scores["collapse"]


def test_no_warning_when_entities_are_predicted():
    scores = ner.entity_scores(GOLD, GOLD)
    assert (scores["n_gold"], scores["n_predicted"], scores["f1"], scores["collapse"]) == (5, 5, 1.0, None)
    # every key the evaluation had before is still there
    assert {"precision", "recall", "f1", "per_type"} <= set(scores)
    # wrong predictions (F1 0) with a loss still falling: no warning yet
    assert collapse_warning(5, 3, 0.0, losses=[0.9, 0.6, 0.4]) is None


def test_no_warning_without_gold_entities():
    assert collapse_warning(0, 0, 0.0) is None
    assert collapse_warning(0, 0, 0.0, losses=[0.3, 0.3, 0.3]) is None


def test_warning_fires_on_f1_zero_with_flat_loss():
    message = collapse_warning(5, 2, 0.0, losses=[0.9, 0.41, 0.40, 0.42])
    assert message == (
        f"{COLLAPSE_PREFIX} entity F1 is 0 (2 predicted, 5 gold entities) while the loss has plateaued at 0.4200; "
        "likely causes: learning rate too high (head saturates on 'O') or too low, "
        "a label set that does not match the data's tags, or too few epochs"
    )
    assert collapse_warning(5, 2, 0.1, losses=[0.4, 0.4, 0.4]) is None  # F1 above 0: learning


@pytest.mark.parametrize(
    "losses, flat",
    [(None, False), ([0.4, 0.4], False), ([0.40, 0.41, 0.39], True), ([0.5, 0.4, 0.3], False), ([0, 0, 0], False)],
)
def test_loss_plateau(losses, flat):
    assert loss_plateaued(losses) is flat
