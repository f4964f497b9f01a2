"""Token-classification encoding, prediction and strict entity-level evaluation, without FLARE.

Training runs in :mod:`flaretune.train.loop`.

Sub-word alignment: each word's label sits on its first sub-token; later sub-tokens and special
tokens get -100 and are ignored by the loss. Predictions are read back from first sub-tokens, so
scores are per word, as in CoNLL evaluation.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from flaretune.train.diagnose import collapse_warning, entity_counts
from flaretune.train.loop import IGNORE_INDEX, batches


@dataclass
class Encoded:
    """One tokenised sentence: model inputs plus what is needed to map predictions back to words."""

    input_ids: List[int]
    labels: List[int]  # per sub-token, IGNORE_INDEX where not a word's first sub-token
    word_tags: List[str]  # gold tags of the words that survived truncation


def encode(sentences: Sequence, tokenizer, label2id: Dict[str, int], max_length: int = 128) -> List[Encoded]:
    """Tokenise pre-split sentences (objects with ``tokens`` and ``tags``) and align labels to first sub-tokens."""
    encoded = []
    for sentence in sentences:
        enc = tokenizer(list(sentence.tokens), is_split_into_words=True, truncation=True, max_length=max_length)
        labels, previous = [], None
        for word_id in enc.word_ids():
            if word_id is None or word_id == previous:
                labels.append(IGNORE_INDEX)
            else:
                labels.append(label2id[sentence.tags[word_id]])
            previous = word_id if word_id is not None else previous
        n_words = sum(1 for label in labels if label != IGNORE_INDEX)
        encoded.append(Encoded(list(enc["input_ids"]), labels, list(sentence.tags[:n_words])))
    return encoded


def predict(model, encoded: Sequence[Encoded], id2label: Dict[int, str], pad_id: int, batch_size: int = 32):
    """Predicted BIO tags per word (first sub-token of each word)."""
    import torch

    model.eval()
    predictions: List[List[str]] = []
    with torch.no_grad():
        for ids, mask, labels in batches(encoded, batch_size, pad_id):
            logits = model(input_ids=ids, attention_mask=mask).logits
            best = logits.argmax(-1)
            for row in range(ids.shape[0]):
                keep = labels[row] != IGNORE_INDEX
                predictions.append([id2label[int(i)] for i in best[row][keep]])
    return predictions


def entity_scores(
    gold: List[List[str]], predicted: List[List[str]], losses: Optional[Sequence[float]] = None
) -> Dict[str, object]:
    """Strict (exact span and type) entity precision/recall/F1, overall and per type, as fractions,
    plus the gold and predicted entity counts and ``collapse``: a one-line warning or None
    (see ``flaretune.train.diagnose``; ``losses``, oldest first, lets it spot a plateau at F1 0).

    seqeval in strict IOB2 mode (Ramshaw & Marcus tagging; CoNLL-2003 scoring).
    """
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    report = classification_report(gold, predicted, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    per_type = {
        name: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "support": int(v["support"])}
        for name, v in report.items()
        if not name.endswith(" avg")
    }
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    f1 = float(micro["f1-score"])
    n_gold, n_predicted = entity_counts(gold, predicted)
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": f1,
        "per_type": per_type,
        "n_gold": n_gold,
        "n_predicted": n_predicted,
        "collapse": collapse_warning(n_gold, n_predicted, f1, losses),
    }


def evaluate(
    model, encoded: Sequence[Encoded], id2label: Dict[int, str], pad_id: int, losses: Optional[Sequence[float]] = None
) -> Dict[str, object]:
    predicted = predict(model, encoded, id2label, pad_id)
    return entity_scores([e.word_tags for e in encoded], predicted, losses)
