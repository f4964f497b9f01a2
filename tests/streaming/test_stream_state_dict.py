import json

import pytest

from flaretune.streaming.state_dict import INDEX_NAME, load_state_dict, spill_state_dict, write_synthetic_model

torch = pytest.importorskip("torch")


def test_spill_and_load_round_trip_in_shards(tmp_path):
    state = {f"layer.{i}.weight": torch.randn(64, 64) for i in range(5)}
    state["head.bias"] = torch.arange(7, dtype=torch.int64)
    folder = spill_state_dict(state, tmp_path / "sd", shard_mb=0.04)  # ~2 tensors per shard
    index = json.loads((folder / INDEX_NAME).read_text())
    assert len(set(index["weight_map"].values())) == 3
    loaded = load_state_dict(folder)
    assert list(loaded) == list(state)
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor)


def test_synthetic_model_is_valid_safetensors_of_the_requested_size(tmp_path):
    folder = write_synthetic_model(tmp_path / "m", 3 * 1024 * 1024, shard_mb=2, tensor_mb=1)
    shards = sorted(folder.glob("*.safetensors"))
    assert len(shards) == 2
    loaded = load_state_dict(folder)
    assert sum(t.numel() * t.element_size() for t in loaded.values()) == 3 * 1024 * 1024
    assert {t.dtype for t in loaded.values()} == {torch.bfloat16}
