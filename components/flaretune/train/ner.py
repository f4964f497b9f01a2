"""Token-classification training and strict entity-level evaluation, without FLARE.

Sub-word alignment: each word's label sits on its first sub-token; later sub-tokens and special
tokens get -100 and are ignored by the loss. Predictions are read back from first sub-tokens, so
scores are per word, as in CoNLL evaluation.
"""

import math
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from flaretune.train.diagnose import collapse_warning, entity_counts

IGNORE_INDEX = -100


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


def batches(encoded: Sequence[Encoded], batch_size: int, pad_id: int, shuffle: bool = False, seed: int = 0):
    """Yield padded ``(input_ids, attention_mask, labels)`` tensors."""
    import torch

    order = list(range(len(encoded)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        chunk = [encoded[i] for i in order[start : start + batch_size]]
        width = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for row, e in enumerate(chunk):
            n = len(e.input_ids)
            ids[row, :n] = torch.tensor(e.input_ids)
            mask[row, :n] = 1
            labels[row, :n] = torch.tensor(e.labels)
        yield ids, mask, labels


@dataclass
class TrainResult:
    steps: int
    examples: int
    mean_loss: float
    aborted: bool = False


def train(
    model,
    encoded: Sequence[Encoded],
    pad_id: int,
    epochs: float = 1.0,
    learning_rate: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
    max_steps: int = 0,
    proximal: Optional[Callable[[], "object"]] = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_step: Optional[Callable[[int, float], None]] = None,
) -> TrainResult:
    """AdamW over the trainable parameters for ``epochs`` passes (or ``max_steps`` steps when > 0).

    ``proximal`` returns an extra loss term (FedProx); ``should_stop`` is checked between steps so
    a FLARE abort takes effect within one step.
    """
    import torch

    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(encoded) / batch_size)
    total = max_steps if max_steps > 0 else max(1, round(epochs * steps_per_epoch))
    model.train()
    step, examples, loss_sum, epoch = 0, 0, 0.0, 0
    while step < total:
        for ids, mask, labels in batches(encoded, batch_size, pad_id, shuffle=True, seed=seed + epoch):
            if step >= total:
                break
            if should_stop():
                return TrainResult(step, examples, loss_sum / max(step, 1), aborted=True)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            if proximal is not None:
                loss = loss + proximal()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            examples += ids.shape[0]
            loss_sum += float(loss.detach())
            if on_step is not None:
                on_step(step, float(loss.detach()))
        epoch += 1
    return TrainResult(step, examples, loss_sum / max(step, 1))


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
