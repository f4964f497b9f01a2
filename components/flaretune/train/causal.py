"""Instruction tuning of a causal LM with LoRA, and its evaluation, without FLARE.

Each example becomes one ChatML conversation (optional system turn, user = instruction + input,
assistant = output). The loss covers only the assistant's answer and its ``<|im_end|>``: prompt
tokens are labelled -100, as in Alpaca/FinGPT supervised fine-tuning.

Evaluation follows the label log-likelihood protocol used for zero-shot classification with LMs
(Brown et al., 2020, "Language Models are Few-Shot Learners", Sec. 2.4): for an example whose answer
is a label word, every candidate word is scored by the summed log-probability of its tokens right
after the prompt and the argmax is the prediction, so a model that would not answer in one word is
still scored. Free-form examples report the mean answer-token loss and its perplexity.
"""

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence

from flaretune.data.types import SENTIMENT_LABELS
from flaretune.errors import ConfigError
from flaretune.models.lora import PeftSpec
from flaretune.train import loop
from flaretune.train.lora_trainer import LoraTrainer

IGNORE_INDEX = loop.IGNORE_INDEX
MIN_MAX_LENGTH = 32


@dataclass
class Encoded:
    """One tokenised conversation; ``input_ids``/``labels`` are what :func:`flaretune.train.loop.batches` pads."""

    input_ids: List[int]  # prompt + answer + <|im_end|>
    labels: List[int]  # IGNORE_INDEX over the prompt, the token ids over the answer
    prompt_length: int
    label: Optional[str]  # the gold label word when the answer is one, else None


def prompt_ids(tokenizer, instruction: str, input_text: str, system_prompt: Optional[str], budget: int) -> List[int]:
    """ChatML prompt ending in ``<|im_start|>assistant\\n``; a long user turn is cut at its end to fit ``budget``."""
    content = f"{instruction}\n{input_text}" if input_text else instruction
    messages = [{"role": "user", "content": content}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    cut = text.rindex(content) + len(content)
    # the split falls on a special token, so the two halves tokenise as the whole does
    head = tokenizer(text[:cut], add_special_tokens=False)["input_ids"]
    tail = tokenizer(text[cut:], add_special_tokens=False)["input_ids"]
    return head[: max(budget - len(tail), 1)] + tail


def encode(
    examples: Sequence,
    tokenizer,
    max_length: int = 96,
    system_prompt: Optional[str] = None,
    label_words: Sequence[str] = SENTIMENT_LABELS,
) -> List[Encoded]:
    """Tokenise ``Example`` records (instruction, input, output) for training and evaluation.

    An answer that is a label word (any case, surrounding spaces) is trained as the canonical word,
    the one evaluation scores. Answers longer than half of ``max_length`` are cut.
    """
    canonical = {word.lower(): word for word in label_words}
    eos = tokenizer.eos_token_id
    encoded = []
    for example in examples:
        label = canonical.get(example.output.strip().lower())
        answer = tokenizer(label or example.output, add_special_tokens=False)["input_ids"] + [eos]
        answer = answer[: max_length // 2]
        prompt = prompt_ids(tokenizer, example.instruction, example.input, system_prompt, max_length - len(answer))
        encoded.append(Encoded(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, len(prompt), label))
    return encoded


def _left_padded(sequences: Sequence[Sequence[int]], pad_id: int):
    """Left padding puts every sequence's last token in the last column; positions restart at 0 per row."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


MIN_SHARED_PREFIX = 8  # tokens; below this the cached prefix saves less than its copies cost


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each prompt at least one token of its own."""
    if not prompts:
        return 0
    limit = min(len(p) for p in prompts) - 1
    first, length = prompts[0], 0
    while length < limit and all(p[length] == first[length] for p in prompts):
        length += 1
    return length


def _prefix_cache(model, prefix: Sequence[int]):
    """The key/value cache of the shared prefix (system turn and instruction), computed once per evaluation."""
    import torch

    return model(input_ids=torch.tensor([list(prefix)]), use_cache=True).cache


def _after_prefix(model, cache, prefix: int, suffixes: Sequence[List[int]], pad_id: int):
    """Logits of the suffixes run on a copy of the prefix cache: the same numbers as the whole prompts give.

    Suffixes are left-padded after the prefix; the padding is masked out and positions continue from the
    prefix, so every row's last column is its prompt's last token at its true position.
    """
    import copy

    import torch

    ids, mask, pos = _left_padded(suffixes, pad_id)
    rows = ids.shape[0]
    past = copy.deepcopy(cache)
    past.batch_repeat_interleave(rows)
    full_mask = torch.cat([torch.ones((rows, prefix), dtype=mask.dtype), mask], dim=1)
    return model(input_ids=ids, attention_mask=full_mask, position_ids=pos + prefix, cache=past,
                 logits_to_keep=1).logits


def score_candidates(model, prompts: Sequence[List[int]], candidates: Sequence[List[int]], pad_id: int, batch_size: int = 16):
    """``(n_prompts, n_candidates)`` tensor: summed log-prob of each candidate's tokens after each prompt.

    Single-token candidates (the usual case for label words) need one forward pass per prompt and
    only the last position's logits; the prefix every prompt shares (system turn, instruction: about
    two thirds of a sentiment prompt) runs once and its key/value cache is reused by every batch.
    Longer candidates run prompt+candidate once per candidate.
    """
    import torch

    model.eval()
    longest = max(len(c) for c in candidates)
    scores = torch.empty((len(prompts), len(candidates)))
    with torch.no_grad():
        if longest == 1:
            index = torch.tensor([c[0] for c in candidates])
            prefix = shared_prefix_length(prompts)
            cache = _prefix_cache(model, prompts[0][:prefix]) if prefix >= MIN_SHARED_PREFIX else None
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start : start + batch_size]
                if cache is None:
                    ids, mask, pos = _left_padded(batch, pad_id)
                    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits
                else:
                    logits = _after_prefix(model, cache, prefix, [p[prefix:] for p in batch], pad_id)
                scores[start : start + len(batch)] = logits[:, -1].float().log_softmax(-1)[:, index]
            return scores
        pairs = [(p, c) for p in range(len(prompts)) for c in range(len(candidates))]
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            ids, mask, pos = _left_padded([prompts[p] + candidates[c] for p, c in chunk], pad_id)
            # logits at column j predict column j+1: keep the ones that predict the candidate tokens
            logprobs = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=longest + 1).logits
            logprobs = logprobs[:, :-1].float().log_softmax(-1)
            for row, (p, c) in enumerate(chunk):
                cand = candidates[c]
                picked = logprobs[row, longest - len(cand) :].gather(-1, torch.tensor(cand)[:, None])
                scores[p, c] = picked.sum()
    return scores


def batch_prefix_length(ids, mask, labels) -> int:
    """Leading columns every row of a right-padded training batch shares, ending before the position
    that predicts any row's first answer token (:func:`shared_prefix_length` of the rows' prompts);
    0 when that is under ``MIN_SHARED_PREFIX`` or one row."""
    if ids.shape[0] < 2:
        return 0
    answer = labels != IGNORE_INDEX
    # a row's prompt ends where its answer starts (a row without one: at its padding)
    ends = [int(a.int().argmax()) if bool(a.any()) else int(m.sum()) for a, m in zip(answer, mask)]
    length = shared_prefix_length([row[:end] for row, end in zip(ids.tolist(), ends)])
    return length if length >= MIN_SHARED_PREFIX else 0


def answer_logits(model, ids, mask, labels, share_prefix: bool = False):
    """Logits at the positions that predict an answer token, flattened, with those tokens as targets.

    The vocabulary projection runs only there (``logits_to_keep`` as a boolean mask): for a one-word
    answer after a 50-token prompt that skips ~20% of a training step's compute.

    ``share_prefix``: the columns every row starts with (system turn and instruction, about 40 of a bank
    message's 70 tokens) run once as one row, whose key/value cache, repeated for every row, serves the
    rest of the batch. Gradients reach the prefix through the repeated cache, so loss and gradients are
    the full batch's (to float rounding); only dropout inside the prefix is then shared by the rows.
    """
    import torch

    predicts_answer = torch.zeros_like(labels, dtype=torch.bool)
    predicts_answer[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    targets = labels[:, 1:][predicts_answer[:, :-1]]
    prefix = batch_prefix_length(ids, mask, labels) if share_prefix else 0
    if prefix:
        cache = model(input_ids=ids[:1, :prefix], attention_mask=mask[:1, :prefix], use_cache=True).cache
        cache.batch_repeat_interleave(ids.shape[0])
        positions = torch.arange(prefix, ids.shape[1]).expand(ids.shape[0], -1)
        logits = model(input_ids=ids[:, prefix:], attention_mask=mask, position_ids=positions, cache=cache,
                       logits_to_keep=predicts_answer[:, prefix:]).logits
    else:
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=predicts_answer).logits
    return logits.reshape(-1, logits.shape[-1]), targets


class AnswerLoss:
    """Wraps a causal LM so ``wrapper(input_ids, attention_mask, labels).loss`` is the mean answer-token
    cross-entropy (what the HF model returns too), computed from the answer positions' logits only;
    ``share_prefix`` runs a batch's common prefix once (:func:`answer_logits`).

    ``label_adjustment``: ``(token ids, offsets)`` added to those tokens' logits wherever the target is one
    of them (logit adjustment, Menon et al., 2021; FedLC, Zhang et al., 2022). With offsets ``tau * log
    prior`` of the site's own label shares, training fits the label likelihood instead of the site's prior,
    so sites whose label mixes differ stop pulling the shared adapter towards their majority label.
    """

    def __init__(self, model, share_prefix: bool = True, label_adjustment=None):
        self.model = model
        self.share_prefix = share_prefix
        self.label_adjustment = label_adjustment

    def __getattr__(self, name):  # train(), parameters(), ... go to the model
        return getattr(self.model, name)

    def __call__(self, input_ids, attention_mask, labels):
        import torch

        logits, targets = answer_logits(self.model, input_ids, attention_mask, labels, self.share_prefix)
        logits = logits.float()
        if self.label_adjustment is not None:
            ids, offsets = self.label_adjustment
            rows = torch.isin(targets, ids)
            adjusted = logits[rows]
            adjusted[:, ids] = adjusted[:, ids] + offsets
            logits = logits.clone()
            logits[rows] = adjusted
        return SimpleNamespace(loss=torch.nn.functional.cross_entropy(logits, targets))


def label_log_prior(encoded: Sequence[Encoded], label_words: Sequence[str], smoothing: float = 1.0) -> List[float]:
    """Log of each label word's share among ``encoded``'s labelled records (add-``smoothing`` counts)."""
    counts = [sum(e.label == word for e in encoded) + smoothing for word in label_words]
    total = sum(counts)
    return [math.log(c / total) for c in counts]


def answer_loss(model, encoded: Sequence[Encoded], pad_id: int, batch_size: int = 8):
    """Token-weighted mean cross-entropy over the answer tokens, and the number of tokens."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, mask, labels in loop.batches(encoded, batch_size, pad_id):
            logits, targets = answer_logits(model, ids, mask, labels)
            total += float(torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum"))
            count += int(targets.numel())
    return total / max(count, 1), count


def classification_scores(gold: Sequence[str], predicted: Sequence[str]) -> Dict[str, object]:
    """Accuracy and per-label precision/recall/F1 (fractions); macro F1 over labels seen in gold or predictions.

    ``per_label[label]["predicted"]`` counts the examples answered ``label``; ``collapse`` is a one-line
    warning when (nearly) every answer is one label on a mixed test set, else None.
    """
    from flaretune.train.diagnose import label_collapse_warning

    labels = sorted(set(gold) | set(predicted))
    per_label = {}
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(gold, predicted))
        fp = sum(g != label and p == label for g, p in zip(gold, predicted))
        fn = sum(g == label and p != label for g, p in zip(gold, predicted))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn,
                            "predicted": tp + fp}
    correct = sum(g == p for g, p in zip(gold, predicted))
    return {
        "accuracy": correct / len(gold) if gold else 0.0,
        "macro_f1": sum(v["f1"] for v in per_label.values()) / len(per_label) if per_label else 0.0,
        "per_label": per_label,
        "collapse": label_collapse_warning(list(gold), list(predicted)),
    }


class InstructTrainer(LoraTrainer):
    """A LoRA causal-LM trainer (a :class:`~flaretune.train.protocol.Trainer`)."""

    def __init__(
        self,
        spec: PeftSpec,
        max_length: int = 96,
        num_threads: int = 0,
        system_prompt: Optional[str] = None,
        label_words: Sequence[str] = SENTIMENT_LABELS,
        eval_batch_size: int = 16,
        base_dir=None,
        model=None,
        logit_adjustment: float = 0.0,
    ):
        if spec.is_token_classification:
            raise ConfigError(
                f"model_name {spec.model_name!r} is a token classifier; instruction tuning needs a causal LM "
                "(smollm2-135m or tiny-smollm2) with target_modules like ['q_proj', 'v_proj']"
            )
        if max_length < MIN_MAX_LENGTH:
            raise ConfigError(f"max_length must be >= {MIN_MAX_LENGTH} tokens (ChatML framing alone takes ~10), got {max_length}")
        if not label_words or len({w.lower() for w in label_words}) != len(label_words):
            raise ConfigError(f"label_words must be distinct, non-empty words, got {list(label_words)}")
        super().__init__(spec, num_threads=num_threads, base_dir=base_dir, model=model)
        self.max_length = max_length
        self.system_prompt = system_prompt
        self.label_words = list(label_words)
        self.eval_batch_size = eval_batch_size
        self.candidate_ids = [self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in self.label_words]
        if logit_adjustment < 0:
            raise ConfigError(f"logit_adjustment must be >= 0 (0: off), got {logit_adjustment}")
        if logit_adjustment and any(len(ids) != 1 for ids in self.candidate_ids):
            raise ConfigError("logit_adjustment needs label words of one token each, got "
                              + ", ".join(f"{w!r}: {len(i)}" for w, i in zip(self.label_words, self.candidate_ids)))
        self.logit_adjustment = logit_adjustment
        self._label_adjustment = None

    def encode(self, examples: Sequence) -> List[Encoded]:
        return encode(examples, self.tokenizer, self.max_length, self.system_prompt, self.label_words)

    def training_module(self):
        return AnswerLoss(self.model, label_adjustment=self._label_adjustment)

    def fit(self, encoded: Sequence[Encoded], *args, **kwargs):
        """As :meth:`ModelTrainer.fit`; with ``logit_adjustment`` tau, the label words' logits are offset by
        tau * log of their shares in ``encoded`` (this site's training data) while it trains."""
        self._label_adjustment = None
        if self.logit_adjustment and any(e.label is not None for e in encoded):
            import torch

            prior = label_log_prior(encoded, self.label_words)
            self._label_adjustment = (torch.tensor([ids[0] for ids in self.candidate_ids]),
                                      self.logit_adjustment * torch.tensor(prior))
        try:
            return super().fit(encoded, *args, **kwargs)
        finally:
            self._label_adjustment = None

    def predict(self, encoded: Sequence[Encoded]) -> List[str]:
        """The best-scoring label word for each example, from its prompt alone."""
        prompts = [e.input_ids[: e.prompt_length] for e in encoded]
        scores = score_candidates(self.model, prompts, self.candidate_ids, self.pad_id, self.eval_batch_size)
        return [self.label_words[i] for i in scores.argmax(-1).tolist()]

    def evaluate(self, encoded: Sequence[Encoded]) -> Dict[str, object]:
        """Label scoring on label-word examples; answer loss and perplexity on the free-form rest."""
        labelled = [e for e in encoded if e.label is not None]
        free_form = [e for e in encoded if e.label is None]
        result: Dict[str, object] = {"n_scored": len(labelled), "n_free_form": len(free_form)}
        if labelled:
            result.update(classification_scores([e.label for e in labelled], self.predict(labelled)))
        if free_form:
            loss, _ = answer_loss(self.model, free_form, self.pad_id, max(1, self.eval_batch_size // 2))
            result.update(answer_loss=loss, perplexity=math.exp(min(loss, 50.0)))
        return result
