"""Make a collapsed NER model loud: entity counts and a one-line warning, as pure functions.

A token classifier trained on imbalanced tags (most tokens ``O``) can settle on predicting ``O``
everywhere: token accuracy and loss look fine while entity F1 is 0. ``collapse_warning`` turns that
state into one line for logs and ``report.json``. No FLARE, no torch.
"""

from typing import List, Optional, Sequence, Tuple

# the loss counts as flat when the last values move by less than this fraction of their mean
_PLATEAU_WINDOW = 3
_PLATEAU_TOLERANCE = 0.05

COLLAPSE_PREFIX = "COLLAPSE:"
_CAUSES = (
    "likely causes: learning rate too high (head saturates on 'O') or too low, "
    "a label set that does not match the data's tags, or too few epochs"
)


def strict_spans(tags: Sequence[str]) -> List[Tuple[str, int, int]]:
    """``(type, start, end)`` per entity under strict IOB2 (seqeval ``mode="strict"``, ``IOB2``).

    An entity starts at ``B-X`` and continues through ``I-X``; an ``I-X`` that does not continue an
    ``X`` entity starts nothing and is not counted.
    """
    spans: List[Tuple[str, int, int]] = []
    start, kind = None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        if start is not None and tag == f"I-{kind}":
            continue
        if start is not None:
            spans.append((kind, start, i))
            start, kind = None, None
        if tag.startswith("B-"):
            start, kind = i, tag[2:]
    return spans


def entity_counts(gold_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]]) -> Tuple[int, int]:
    """``(n_gold_entities, n_predicted_entities)`` over sentences of IOB2 tags (strict spans)."""
    if len(gold_tags) != len(predicted_tags):
        raise ValueError(f"{len(gold_tags)} gold sentences but {len(predicted_tags)} predicted")
    n_gold = sum(len(strict_spans(tags)) for tags in gold_tags)
    n_predicted = sum(len(strict_spans(tags)) for tags in predicted_tags)
    return n_gold, n_predicted


def loss_plateaued(losses: Optional[Sequence[float]]) -> bool:
    """True when the last ``_PLATEAU_WINDOW`` losses stay within ``_PLATEAU_TOLERANCE`` of their mean."""
    if not losses or len(losses) < _PLATEAU_WINDOW:
        return False
    tail = [float(x) for x in losses[-_PLATEAU_WINDOW:]]
    mean = sum(tail) / len(tail)
    return mean > 0 and (max(tail) - min(tail)) <= _PLATEAU_TOLERANCE * mean


def collapse_warning(
    n_gold: int, n_predicted: int, f1: float, losses: Optional[Sequence[float]] = None
) -> Optional[str]:
    """One line when the model has collapsed, else None.

    Fires when the test set has entities and the model predicts none, or when entity F1 is 0 while
    the (per-epoch or per-round) loss has plateaued over its last few values.
    """
    if n_gold <= 0:
        return None
    if n_predicted == 0:
        return (f"{COLLAPSE_PREFIX} the model predicts no entity on a test set with {n_gold} "
                f"(it tags every word 'O'); {_CAUSES}")
    if f1 == 0.0 and loss_plateaued(losses):
        return (f"{COLLAPSE_PREFIX} entity F1 is 0 ({n_predicted} predicted, {n_gold} gold entities) while "
                f"the loss has plateaued at {float(losses[-1]):.4f}; {_CAUSES}")
    return None


# a classifier "collapses" when one label takes at least this share of its predictions ...
_LABEL_COLLAPSE_SHARE = 0.95
# ... while the gold labels are mixed: that label's own gold share is at most this
_LABEL_MIXED_SHARE = 0.8


def label_collapse_warning(gold: Sequence[str], predicted: Sequence[str]) -> Optional[str]:
    """One line when a classifier answers (nearly) one label for every example of a mixed test set.

    The label-word analogue of predicting 'O' everywhere: accuracy can still look respectable (the
    majority label's share) while macro-F1 shows the model has learned nothing about the others.
    """
    if not gold or len(gold) != len(predicted):
        return None
    top = max(set(predicted), key=lambda label: (predicted.count(label), label))
    share = predicted.count(top) / len(predicted)
    gold_share = sum(g == top for g in gold) / len(gold)
    if share >= _LABEL_COLLAPSE_SHARE and gold_share <= _LABEL_MIXED_SHARE:
        return (f"{COLLAPSE_PREFIX} the model answers {top!r} for {share:.0%} of the test examples "
                f"(gold share {gold_share:.0%}); likely causes: learning rate too high or too few steps, "
                "or a training split that holds one label")
    return None
