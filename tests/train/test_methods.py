"""Client methods on the tiny models: exactly the right tensors train and travel (lora, full, layer_skip,
ffa_lora), FFA-LoRA's A never changes and its aggregate is the exact mean of the sites' products."""

import numpy as np
import pytest
import torch

from flaretune.aggregation.strategy import make_strategy
from flaretune.data.types import CLINICAL_LABELS, Sentence
from flaretune.errors import ConfigError
from flaretune.models.lora import PeftSpec, adapter_state
from flaretune.train.layer_select import layer_of, select_layers
from flaretune.train.methods import make_method, method_names, site_spec
from flaretune.train.ner_trainer import NerTrainer

LABELS = list(CLINICAL_LABELS)
NER = dict(model_name="tiny-minilm-ner", labels=LABELS, lora_r=4, lora_dropout=0.0)
SENTENCES = [Sentence(["Cisplatin", "nephrotoxicity", "noted", "today"], ["B-Chemical", "B-Disease", "O", "O"]),
             Sentence(["no", "fever", "after", "aspirin"], ["O", "B-Disease", "O", "B-Chemical"])] * 4


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_the_registry_names_the_built_in_methods_and_refuses_others_in_one_line():
    assert {"lora", "full", "layer_skip", "ffa_lora"} <= set(method_names())
    with pytest.raises(ConfigError, match=r"^Invalid method 'sgd'; valid: lora, full, layer_skip, ffa_lora"):
        PeftSpec(**NER, method="sgd")


def test_lora_is_todays_adapter_exactly():
    from peft import get_peft_model

    from flaretune.models.base import load_base_model

    spec = PeftSpec(**NER)
    today = get_peft_model(load_base_model(spec.model_name, labels=LABELS, seed=0), spec.lora_config())
    method = make_method("lora", spec)
    model = method.build()
    expected = adapter_state(today)
    got = method.get_params(model)
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


@pytest.mark.parametrize("layers, n, expected", [
    ("0,2", 4, [0, 2]), ([3, 1], 4, [1, 3]), ("top2", 6, [4, 5]), ("top 1", 2, [1]), ("every_other", 6, [0, 2, 4]),
    (1, 2, [1]),
])
def test_layer_selection(layers, n, expected):
    assert select_layers(layers, n) == expected


@pytest.mark.parametrize("layers, message", [
    ("0,6", r"indices must be in 0..5"), ("top7", r"k must be in 1..6"), ("half", r"is not an index list"),
    ("1,1", r"repeats an index"), (None, r"layers is empty"),
])
def test_a_bad_layer_selection_is_one_line(layers, message):
    with pytest.raises(ConfigError, match=message):
        select_layers(layers, 6)


def test_layer_skip_trains_and_sends_exactly_the_selected_layers_and_the_head():
    method = make_method("layer_skip", PeftSpec(**NER, method="layer_skip", layers="top1"))
    model = method.build()
    expected = {n for n, _ in model.named_parameters() if layer_of(n) == 1 or n.startswith("classifier.")}
    assert any(n.startswith("bert.encoder.layer.1.") for n in expected) and len(expected) > 2
    assert _trainable(model) == expected
    assert set(method.get_params(model)) == expected


def test_layer_skip_needs_layers():
    with pytest.raises(ConfigError, match="method 'layer_skip' needs layers"):
        make_method("layer_skip", PeftSpec(**NER, method="layer_skip"))


def test_lora_on_selected_layers_puts_adapters_there_only():
    method = make_method("lora", PeftSpec(**NER, layers=[0]))
    model = method.build()
    sent = set(method.get_params(model))
    lora = {k for k in sent if ".lora_" in k}
    assert lora and {layer_of(k) for k in lora} == {0}
    assert len(lora) == 4  # A and B of query and value in layer 0
    assert sent - lora == {k for k in sent if "classifier" in k} and sent - lora
    assert {n for n in _trainable(model) if ".lora_" in n} == {n for n in _trainable(model) if ".lora_" in n and layer_of(n) == 0}


def test_full_sends_every_weight_and_loads_them_back():
    method = make_method("full", PeftSpec(**NER, method="full"))
    model = method.build()
    params = method.get_params(model)
    assert set(params) == {n for n, _ in model.named_parameters()}
    other = make_method("full", PeftSpec(**{**NER, "seed": 1}, method="full")).build()
    method.set_params(other, params)
    assert all(torch.equal(p, params[n]) for n, p in other.named_parameters())
    with pytest.raises(ConfigError, match="missing"):
        method.set_params(other, {k: v for k, v in params.items() if "classifier" not in k})


def _ffa_trainer():
    trainer = NerTrainer(PeftSpec(**NER, method="ffa_lora"), max_length=16)
    return trainer, trainer.encode(SENTENCES)


def test_ffa_lora_sends_b_and_the_head_and_halves_the_adapter_upload():
    spec = PeftSpec(**NER)
    lora = make_method("lora", spec).get_params(make_method("lora", spec).build())
    ffa_method = make_method("ffa_lora", PeftSpec(**NER, method="ffa_lora"))
    model = ffa_method.build()
    ffa = ffa_method.get_params(model)
    nbytes = lambda d, part="": sum(v.numel() * v.element_size() for k, v in d.items() if part in k)  # noqa: E731
    assert set(ffa) == {k for k in lora if ".lora_A." not in k}
    assert nbytes(lora, ".lora_A.") == nbytes(lora, ".lora_B.")  # square query/value: A and B the same size
    assert nbytes(ffa, ".lora_") == nbytes(lora, ".lora_") // 2  # the adapter upload halves, exactly
    assert nbytes(ffa) == nbytes(lora) - nbytes(lora, ".lora_A.")
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".lora_A." in n)


def test_ffa_lora_a_never_changes_and_the_aggregate_of_b_is_the_exact_mean_of_the_products():
    sites = [_ffa_trainer() for _ in range(2)]
    a0 = {n: p.detach().clone() for n, p in sites[0][0].model.named_parameters() if ".lora_A." in n}
    for trainer, _ in sites[1:]:  # every site draws A from the job's seed: the same A everywhere
        assert all(torch.equal(p, a0[n]) for n, p in trainer.model.named_parameters() if ".lora_A." in n)
    strategy = make_strategy("fedavg")
    global_params = {k: v.numpy() for k, v in sites[0][0].get_params().items()}
    for round_number in range(2):
        updates = []
        for index, (trainer, encoded) in enumerate(sites):
            trainer.set_params(global_params)
            trainer.fit(encoded, epochs=1, batch_size=4, seed=10 * round_number + index, learning_rate=5e-2)
            updates.append(({k: v.numpy() for k, v in trainer.get_params().items()}, 1.0 + index))
        global_params = strategy.aggregate(global_params, updates)
        for trainer, _ in sites:
            assert all(torch.equal(p, a0[n]) for n, p in trainer.model.named_parameters() if ".lora_A." in n)
    weights = np.array([1.0, 2.0]) / 3.0
    b_keys = [k for k in global_params if ".lora_B." in k]
    assert b_keys and any(np.abs(global_params[k]).max() > 0 for k in b_keys)  # B trained away from zero
    for key in b_keys:
        a = a0[key.replace(".lora_B.weight", ".lora_A.default.weight")].double().numpy()
        site_b = [u[key].astype(np.float64) for u, _ in updates]
        mean_b = sum(w * b for w, b in zip(weights, site_b))
        np.testing.assert_allclose(global_params[key], mean_b, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(global_params[key].astype(np.float64) @ a,
                                   sum(w * (b @ a) for w, b in zip(weights, site_b)), rtol=1e-5, atol=1e-7)


def test_a_site_may_run_its_own_method_only_when_it_exchanges_the_same_tensors():
    spec = PeftSpec(**NER)
    assert site_spec(spec, "lora") == spec
    with pytest.raises(ConfigError, match=r"method 'full' exchanges 'full' tensors but the job's method 'lora'"):
        site_spec(spec, "full")


@pytest.mark.parametrize("method, layers", [("layer_skip", "top1"), ("ffa_lora", None), ("lora", "0")])
def test_dp_sgd_moves_exactly_the_tensors_that_travel(method, layers):
    from flaretune.train.flow import LocalTraining

    trainer = NerTrainer(PeftSpec(**NER, method=method, layers=layers), max_length=16)
    encoded = trainer.encode(SENTENCES)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    sent_before = trainer.get_params()
    settings = LocalTraining(max_steps=1, batch_size=len(encoded), learning_rate=0.01, train_step="dpsgd", step_args=dict(
        noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, dataset_size=len(encoded)))
    trainer.fit(encoded, max_steps=1, batch_size=len(encoded), step=settings.step())
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved == _trainable(trainer.model)
    sent_after = trainer.get_params()
    assert {k for k in sent_after if not torch.equal(sent_after[k], sent_before[k])} == set(sent_after)
    assert sum(v.numel() for v in sent_after.values()) == trainer.trainable_count()


def test_a_layer_skip_global_model_saves_and_loads_as_a_whole_model_folder(tmp_path):
    from flaretune.models.lora import load_adapter_model, save_adapter_folder

    spec = PeftSpec(**NER, method="layer_skip", layers="top1")
    method = make_method("layer_skip", spec)
    params = {k: v + 0.5 for k, v in method.get_params(method.build()).items()}
    model, loaded = load_adapter_model(save_adapter_folder(spec, params, tmp_path / "final"))
    assert loaded == spec
    own = dict(model.named_parameters())
    assert all(torch.equal(own[k].detach(), v) for k, v in params.items())
