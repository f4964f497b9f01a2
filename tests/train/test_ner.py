import pytest

from flaretune.data.types import CLINICAL_LABELS, Sentence
from flaretune.models import load_tokenizer
from flaretune.models.lora import PeftSpec
from flaretune.train import ner
from flaretune.train.ner_trainer import NerTrainer

L2I = {label: i for i, label in enumerate(CLINICAL_LABELS)}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-minilm-ner")


def test_labels_sit_on_first_subtokens_only(tokenizer):
    sentence = Sentence(["Cisplatin", "nephrotoxicity", "noted"], ["B-Chemical", "B-Disease", "O"])
    (enc,) = ner.encode([sentence], tokenizer, L2I, max_length=32)
    word_ids = tokenizer(sentence.tokens, is_split_into_words=True).word_ids()
    assert len(word_ids) > len(sentence.tokens) + 2  # the words do split into several sub-tokens
    seen = set()
    for word_id, label in zip(word_ids, enc.labels):
        if word_id is None or word_id in seen:
            assert label == ner.IGNORE_INDEX
        else:
            assert label == L2I[sentence.tags[word_id]]
            seen.add(word_id)
    assert enc.word_tags == sentence.tags


def test_truncation_keeps_tags_of_surviving_words(tokenizer):
    sentence = Sentence(["word"] * 50, ["O"] * 50)
    (enc,) = ner.encode([sentence], tokenizer, L2I, max_length=10)
    assert len(enc.input_ids) == 10 and len(enc.word_tags) == 8


def test_entity_scores_are_strict():
    gold = [["B-Disease", "I-Disease", "O", "B-Chemical"]]
    assert ner.entity_scores(gold, gold)["f1"] == 1.0
    partial = [["B-Disease", "O", "O", "B-Chemical"]]  # a truncated span is wrong under strict matching
    scores = ner.entity_scores(gold, partial)
    assert scores["precision"] == pytest.approx(0.5) and scores["recall"] == pytest.approx(0.5)
    assert scores["per_type"]["Chemical"]["f1"] == 1.0 and scores["per_type"]["Disease"]["f1"] == 0.0


def test_training_learns_a_toy_task_and_stops_on_request():
    drugs, diseases = ["aspirin", "warfarin", "heparin"], ["fever", "asthma", "gout"]
    sentences = [
        Sentence(["give", d, "for", x, "."], ["O", "B-Chemical", "O", "B-Disease", "O"]) for d in drugs for x in diseases
    ]
    trainer = NerTrainer(PeftSpec(model_name="tiny-minilm-ner", labels=CLINICAL_LABELS, lora_r=4), max_length=16)
    encoded = trainer.encode(sentences)
    before = trainer.evaluate(encoded)["f1"]
    result = trainer.fit(encoded, epochs=40, learning_rate=2e-2, batch_size=9)
    after = trainer.evaluate(encoded)["f1"]
    assert result.steps == 40 and not result.aborted
    assert after > max(before, 0.9)
    stopped = trainer.fit(encoded, epochs=5, batch_size=3, should_stop=lambda: True)
    assert stopped.aborted and stopped.steps == 0


def test_unknown_tags_name_the_fix():
    from flaretune.errors import ConfigError

    trainer = NerTrainer(PeftSpec(model_name="tiny-minilm-ner", labels=CLINICAL_LABELS, lora_r=2))
    with pytest.raises(ConfigError, match="B-Gene"):
        trainer.encode([Sentence(["BRCA1"], ["B-Gene"])])


@pytest.mark.integration
def test_the_shipped_recipe_learns_realistic_imbalanced_notes():
    """Notes with rare, scattered entities (45% of sentences have none): the job's own recipe (lr, warm-up,
    schedule) must leave the all-O state, where a constant 5e-3 stayed on a real corpus. The tiny random
    model never leaves it at any learning rate (its features carry no word identity), so this uses MiniLM:
    about 100 steps, 1-2 minutes on one core."""
    import json
    from pathlib import Path

    from flaretune.data.clinical import make_hospital
    from flaretune.data.types import CLINICAL_NOTES_LABELS

    job = Path(__file__).resolve().parents[2] / "jobs" / "clinical_ner" / "app" / "config" / "config_fed_client.json"
    recipe = json.loads(job.read_text())["executors"][0]["executor"]["args"]
    train, test = make_hospital(0, n_sites=3, seed=1, n_train=200, n_test=60)
    trainer = NerTrainer(PeftSpec(model_name="minilm-ner", labels=CLINICAL_NOTES_LABELS), max_length=64)
    encoded, held_out = trainer.encode(train), trainer.encode(test)
    before = trainer.evaluate(held_out)
    trainer.fit(encoded, epochs=8, learning_rate=recipe["learning_rate"], batch_size=recipe["batch_size"],
                warmup_ratio=recipe["warmup_ratio"], schedule=recipe["lr_schedule"])
    scores = trainer.evaluate(held_out)
    assert scores["n_gold"] == before["n_gold"] > 0 and scores["n_predicted"] > 0 and scores["collapse"] is None
    assert scores["f1"] > 0.2, scores["f1"]
