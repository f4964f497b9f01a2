import numpy as np
import pytest

from flaretune.errors import ConfigError
from flaretune.models.lora import PeftSpec, adapter_state, load_adapter_model, load_adapter_state, save_adapter_folder

LABELS = ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]


@pytest.fixture
def spec():
    return PeftSpec(model_name="tiny-minilm-ner", labels=LABELS, lora_r=4)


def test_only_lora_and_head_are_exchanged(spec):
    model = spec.build()
    state = adapter_state(model)
    assert state and all(("lora_" in k) or ("classifier" in k) for k in state)
    n_state = sum(v.numel() for v in state.values())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_state == n_trainable
    assert n_state < 0.05 * sum(p.numel() for p in model.parameters())


def test_spec_round_trips_and_validates():
    spec = PeftSpec(model_name="tiny-minilm-ner", labels=LABELS)
    assert PeftSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="labels must be given"):
        PeftSpec(model_name="tiny-minilm-ner")
    with pytest.raises(ConfigError, match="lora_r"):
        PeftSpec(model_name="tiny-minilm-ner", labels=LABELS, lora_r=0)


def test_load_state_checks_names_and_shapes(spec):
    model = spec.build()
    state = {k: v.numpy() for k, v in adapter_state(model).items()}
    name = next(iter(state))
    with pytest.raises(ConfigError, match="missing"):
        load_adapter_state(model, {k: v for k, v in state.items() if k != name})
    with pytest.raises(ConfigError, match="shape"):
        load_adapter_state(model, {**state, name: np.zeros((1, 1), dtype=np.float32)})


def test_adapter_folder_loads_with_peft_and_reproduces_outputs(spec, tmp_path):
    import torch

    model = spec.build()
    state = {k: (v + 0.01 * torch.randn_like(v)).numpy() for k, v in adapter_state(model).items()}
    out = save_adapter_folder(spec, state, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors", "labels.json", "tokenizer.json"} <= {
        p.name for p in out.iterdir()
    }
    loaded, loaded_spec = load_adapter_model(out)
    assert loaded_spec == spec
    load_adapter_state(model, state)
    ids = torch.tensor([[101, 2000, 3000, 102]])
    model.eval(), loaded.eval()
    torch.testing.assert_close(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
