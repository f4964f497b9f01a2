"""InstructTrainer on tiny-smollm2: ChatML encoding with prompt masking, label log-likelihood scoring,
and the banks' site data."""

import json
import math

import pytest
import torch

from flaretune.data.types import SENTIMENT_INSTRUCTION, SENTIMENT_LABELS, Example
from flaretune.errors import ConfigError, DataFormatError
from flaretune.models.lora import PeftSpec
from flaretune.train import causal
from flaretune.train.causal import IGNORE_INDEX, InstructTrainer, classification_scores, score_candidates
from flaretune.data.site import load_site_fin_data

SPEC = PeftSpec(model_name="tiny-smollm2", target_modules=["q_proj", "v_proj"], lora_r=4, lora_dropout=0.0)
TOY = [
    Example("Sentiment?", "Profit rose sharply.", "positive"),
    Example("Sentiment?", "Sales fell by 20 percent.", "negative"),
    Example("Sentiment?", "The meeting is on Monday.", "neutral"),
]


@pytest.fixture(scope="module")
def trainer():
    return InstructTrainer(SPEC, max_length=48, system_prompt="")


def _decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_only_the_answer_is_trained(trainer):
    tok = trainer.tokenizer
    (enc,) = trainer.encode([Example(SENTIMENT_INSTRUCTION, "Profit rose.", " Positive ")])
    n = enc.prompt_length
    assert enc.labels[:n] == [IGNORE_INDEX] * n
    assert enc.labels[n:] == enc.input_ids[n:]
    assert _decode(tok, enc.input_ids[n:]) == "positive<|im_end|>"  # canonical label word, then end of turn
    prompt = _decode(tok, enc.input_ids[:n])
    assert prompt == (
        "<|im_start|>system\n<|im_end|>\n"
        f"<|im_start|>user\n{SENTIMENT_INSTRUCTION}\nProfit rose.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert enc.label == "positive"


@pytest.mark.parametrize("system, expected", [(None, "You are a helpful AI assistant"), ("Be brief.", "Be brief.")])
def test_system_turn(trainer, system, expected):
    (enc,) = causal.encode(TOY[:1], trainer.tokenizer, 96, system_prompt=system)
    assert _decode(trainer.tokenizer, enc.input_ids).startswith(f"<|im_start|>system\n{expected}")


def test_long_input_is_cut_but_the_answer_and_turn_framing_stay(trainer):
    (enc,) = trainer.encode([Example("Sentiment?", "revenue " * 200, "negative")])
    assert len(enc.input_ids) <= 48
    assert _decode(trainer.tokenizer, enc.input_ids[: enc.prompt_length]).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert _decode(trainer.tokenizer, enc.input_ids[enc.prompt_length :]) == "negative<|im_end|>"


def test_batched_scores_match_one_by_one_and_the_multi_token_path(trainer):
    prompts = [e.input_ids[: e.prompt_length] for e in trainer.encode(TOY)]
    assert len({len(p) for p in prompts}) > 1  # padding is exercised
    single = trainer.candidate_ids
    batched = score_candidates(trainer.model, prompts, single, trainer.pad_id, batch_size=3)
    alone = torch.stack([score_candidates(trainer.model, [p], single, trainer.pad_id)[0] for p in prompts])
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)
    # two-token candidates: the sum of the label's log-prob and that of <|im_end|> after it
    eos = trainer.tokenizer.eos_token_id
    longer = score_candidates(trainer.model, prompts, [c + [eos] for c in single] + [[eos]], trainer.pad_id, batch_size=4)
    for i, p in enumerate(prompts):
        for j, c in enumerate(single):
            after = score_candidates(trainer.model, [p + c], [[eos]], trainer.pad_id)[0, 0]
            assert longer[i, j] == pytest.approx(float(batched[i, j] + after), abs=1e-4)


def test_the_shared_prefix_runs_once_and_gives_the_same_scores(trainer, monkeypatch):
    assert causal.shared_prefix_length([[1, 2, 3, 4], [1, 2, 3], [1, 2, 9, 9]]) == 2
    assert causal.shared_prefix_length([[5, 6, 7]]) == 2  # a prompt keeps one token of its own
    prompts = [e.input_ids[: e.prompt_length] for e in trainer.encode(TOY)]
    prefix = causal.shared_prefix_length(prompts)
    assert prefix >= causal.MIN_SHARED_PREFIX and all(len(p) > prefix for p in prompts)
    calls = []
    real = causal._prefix_cache
    monkeypatch.setattr(causal, "_prefix_cache", lambda model, ids: calls.append(len(ids)) or real(model, ids))
    cached = score_candidates(trainer.model, prompts, trainer.candidate_ids, trainer.pad_id, batch_size=2)
    assert calls == [prefix]  # once for both batches
    monkeypatch.setattr(causal, "MIN_SHARED_PREFIX", 10**9)
    whole = score_candidates(trainer.model, prompts, trainer.candidate_ids, trainer.pad_id, batch_size=2)
    torch.testing.assert_close(cached, whole, atol=1e-5, rtol=1e-5)


def test_answer_only_logits_give_the_model_s_own_loss(trainer):
    from flaretune.train import ner

    examples = TOY[:2] + [Example("Explain.", "Sales fell.", "A longer free-form answer.")]
    ids, mask, labels = next(ner.batches(trainer.encode(examples), 3, trainer.pad_id))
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        got = causal.AnswerLoss(trainer.model)(ids, mask, labels).loss
    assert float(got) == pytest.approx(float(expected), abs=1e-5)


def test_label_scoring_picks_the_trained_answers():
    trainer = InstructTrainer(SPEC, max_length=48, system_prompt="")
    encoded = trainer.encode(TOY)
    steps = []
    result = trainer.fit(encoded, max_steps=15, batch_size=3, learning_rate=5e-2, on_step=lambda *a: steps.append(a))
    assert result.steps == 15 and not result.aborted and len(steps) == 15
    assert trainer.predict(encoded) == ["positive", "negative", "neutral"]
    scores = trainer.evaluate(encoded + trainer.encode([Example("Define EBITDA.", "", "Earnings before interest.")]))
    assert scores["accuracy"] == 1.0 and scores["macro_f1"] == 1.0
    assert scores["n_scored"] == 3 and scores["n_free_form"] == 1
    assert scores["answer_loss"] > 0 and scores["perplexity"] > 1


def test_classification_scores():
    scores = classification_scores(["positive", "negative", "negative", "neutral"], ["positive", "negative", "positive", "positive"])
    assert scores["accuracy"] == 0.5
    assert scores["per_label"]["negative"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2,
                                               "predicted": 1}
    assert scores["per_label"]["positive"]["predicted"] == 3 and scores["collapse"] is None
    assert scores["per_label"]["neutral"]["f1"] == 0.0
    assert scores["per_label"]["positive"]["f1"] == pytest.approx(0.5)  # precision 1/3, recall 1
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)


def test_a_classifier_answering_one_label_is_flagged_as_collapsed():
    gold = ["negative"] * 10 + ["neutral"] * 7 + ["positive"] * 3
    collapsed = classification_scores(gold, ["negative"] * 20)
    assert collapsed["accuracy"] == 0.5 and collapsed["macro_f1"] == pytest.approx((2 * 0.5 / 1.5) / 3)
    assert collapsed["collapse"].startswith("COLLAPSE: the model answers 'negative' for 100% of the test examples "
                                            "(gold share 50%)")
    assert classification_scores(gold, ["negative"] * 18 + ["neutral", "positive"])["collapse"] is None  # 90% < 95%
    assert classification_scores(["negative"] * 20, ["negative"] * 20)["collapse"] is None  # gold is one label too


def test_trainer_rejects_a_token_classifier_and_tiny_max_length():
    with pytest.raises(ConfigError, match="causal LM"):
        InstructTrainer(PeftSpec(model_name="tiny-minilm-ner", labels=["O"]))
    with pytest.raises(ConfigError, match="max_length"):
        InstructTrainer(SPEC, max_length=8)


# -- site data for banks (flaretune.data.site) --------------------------------------------------
def _jsonl(path, examples):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"instruction": e.instruction, "input": e.input, "output": e.output}) + "\n" for e in examples))
    return path


def test_site_data_from_a_folder_a_single_file_or_the_data_dir(tmp_path, monkeypatch):
    _jsonl(tmp_path / "site-2" / "train.jsonl", TOY * 4)
    _jsonl(tmp_path / "site-2" / "test.jsonl", TOY[:1])
    data = load_site_fin_data("site-2", str(tmp_path / "{site_name}"))
    assert (len(data.train), len(data.test)) == (12, 1)
    single = load_site_fin_data("site-1", str(tmp_path / "site-2" / "train.jsonl"), seed=3)
    assert (len(single.train), len(single.test)) == (11, 1) and "held out" in single.source
    monkeypatch.setenv("FLARETUNE_DATA_DIR", str(tmp_path))
    assert load_site_fin_data("site-2").train == data.train


def test_site_data_reads_financial_phrasebank(tmp_path):
    bank = tmp_path / "Sentences_AllAgree.txt"
    bank.write_bytes("Profit rose to EUR 5 mn .@positive\nSales fell .@negative\nThe AGM is in May .@neutral\n".encode("latin-1") * 4)
    data = load_site_fin_data("site-1", str(bank))
    assert len(data.train) + len(data.test) == 12
    assert all(e.instruction == SENTIMENT_INSTRUCTION and e.output in SENTIMENT_LABELS for e in data.train)
    (tmp_path / "site-1").mkdir()
    bank.rename(tmp_path / "site-1" / "train.txt")
    assert len(load_site_fin_data("site-1", str(tmp_path / "{site_name}")).train) == 11


def test_site_data_falls_back_to_the_synthetic_bank_and_names_missing_files(tmp_path):
    data = load_site_fin_data("site-3", synthetic_train_size=5, synthetic_test_size=4)
    assert (len(data.train), len(data.test)) == (5, 4) and "SYNTHETIC" in data.source
    with pytest.raises(DataFormatError, match="train.jsonl"):
        load_site_fin_data("site-1", str(tmp_path))
    with pytest.raises(DataFormatError, match="does not exist"):
        load_site_fin_data("site-1", str(tmp_path / "nope.jsonl"))
    with pytest.raises(ConfigError, match="data_path"):
        load_site_fin_data("bank-a")  # only site-N names have a synthetic bank


def test_a_batch_s_shared_prefix_runs_once_with_the_full_batch_s_loss_and_gradients(monkeypatch):
    trainer = InstructTrainer(SPEC, max_length=64, system_prompt="You are a financial analyst.")
    examples = [Example(SENTIMENT_INSTRUCTION, text, label) for text, label in
                [("Profit rose sharply.", "positive"), ("Sales fell by 20 percent.", "negative"),
                 ("The meeting is on Monday.", "neutral"), ("Explain the drop.", "It was a bad quarter.")]]
    encoded = trainer.encode(examples)
    ids, mask, labels = next(causal.loop.batches(encoded, 4, trainer.pad_id))
    prompt = min(e.prompt_length for e in encoded)
    prefix = causal.batch_prefix_length(ids, mask, labels)
    assert causal.MIN_SHARED_PREFIX <= prefix < prompt  # system turn + instruction, not the message
    assert causal.batch_prefix_length(ids[:1], mask[:1], labels[:1]) == 0  # one row: nothing to share
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    trainer.model.train()
    results = {}
    for share in (False, True):
        calls = []
        real = trainer.model.forward
        monkeypatch.setattr(trainer.model, "forward", lambda *a, **k: calls.append(k["input_ids"].shape) or real(*a, **k))
        loss = causal.AnswerLoss(trainer.model, share_prefix=share)(ids, mask, labels).loss
        results[share] = (float(loss.detach()), torch.autograd.grad(loss, params))
        monkeypatch.undo()
        assert calls == ([(1, prefix), (4, ids.shape[1] - prefix)] if share else [tuple(ids.shape)])
    assert results[True][0] == pytest.approx(results[False][0], abs=1e-6)
    for shared, full in zip(results[True][1], results[False][1]):
        torch.testing.assert_close(shared, full, rtol=1e-4, atol=1e-6)


def test_logit_adjustment_offsets_only_the_label_words_where_the_target_is_a_label():
    trainer = InstructTrainer(SPEC, max_length=48, system_prompt="", logit_adjustment=1.0)
    encoded = trainer.encode(TOY[:2] + [Example("Explain.", "Sales fell.", "A longer free-form answer.")])
    assert causal.label_log_prior(encoded, ["positive", "negative", "neutral"]) == pytest.approx(
        [math.log(2 / 5), math.log(2 / 5), math.log(1 / 5)])  # add-one counts: 1+1, 1+1, 0+1
    ids, mask, labels = next(causal.loop.batches(encoded, 3, trainer.pad_id))
    words = torch.tensor([c[0] for c in trainer.candidate_ids])
    offsets = torch.tensor([-1.0, -2.0, -3.0])
    trainer.model.eval()
    with torch.no_grad():
        logits, targets = causal.answer_logits(trainer.model, ids, mask, labels)
        expected = logits.float().clone()
        for row, target in enumerate(targets.tolist()):
            if target in words.tolist():  # the label positions; <|im_end|> and free-form tokens keep theirs
                expected[row, words] += offsets
        got = causal.AnswerLoss(trainer.model, label_adjustment=(words, offsets))(ids, mask, labels).loss
        plain = causal.AnswerLoss(trainer.model)(ids, mask, labels).loss
    assert int(torch.isin(targets, words).sum()) == 2
    assert float(got) == pytest.approx(float(torch.nn.functional.cross_entropy(expected, targets)), abs=1e-6)
    assert float(got) != pytest.approx(float(plain), abs=1e-3)


def test_logit_adjustment_is_used_only_while_fitting_and_needs_one_token_labels():
    trainer = InstructTrainer(SPEC, max_length=48, system_prompt="", logit_adjustment=0.5)
    seen = []
    real = causal.AnswerLoss.__call__
    def spy(self, *args, **kwargs):
        seen.append(self.label_adjustment)
        return real(self, *args, **kwargs)
    causal.AnswerLoss.__call__ = spy
    try:
        trainer.fit(trainer.encode(TOY), max_steps=1, batch_size=3)
    finally:
        causal.AnswerLoss.__call__ = real
    words, offsets = seen[0]
    assert words.tolist() == [c[0] for c in trainer.candidate_ids]
    assert offsets.tolist() == pytest.approx([0.5 * math.log(1 / 3)] * 3)
    assert trainer._label_adjustment is None  # evaluation and the next fit start clean
    with pytest.raises(ConfigError, match="logit_adjustment must be >= 0"):
        InstructTrainer(SPEC, max_length=48, logit_adjustment=-1)
    with pytest.raises(ConfigError, match="one token each"):
        InstructTrainer(SPEC, max_length=48, label_words=["very positive", "negative"], logit_adjustment=1)
