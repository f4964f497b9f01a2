import json

import pytest
import torch

from flaretune.errors import ConfigError
from flaretune.streaming.aggregate import average_folders
from flaretune.streaming.state_dict import INDEX_NAME, load_state_dict, spill_state_dict


def _model(seed: int, dtype=torch.float32) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(64, 16, generator=g).to(dtype),
        "layer.0.weight": torch.randn(16, 16, generator=g).to(dtype),
        "layer.0.bias": torch.randn(16, generator=g).to(dtype),
        "position_ids": torch.arange(64),
    }


def test_weighted_mean_of_sharded_folders_matches_in_memory_mean(tmp_path):
    models = [_model(s) for s in range(3)]
    folders = [spill_state_dict(m, tmp_path / f"site{i}", shard_mb=0.004) for i, m in enumerate(models)]
    (folders[0] / "config.json").write_text('{"model_type": "bert"}')
    weights = [10, 30, 60]

    out = average_folders(folders, weights, tmp_path / "global", shard_mb=0.005)

    result = load_state_dict(out)
    for name in ("embed.weight", "layer.0.weight", "layer.0.bias"):
        expected = sum(m[name] * w for m, w in zip(models, weights)) / sum(weights)
        torch.testing.assert_close(result[name], expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(result["position_ids"], torch.arange(64))
    assert json.loads((out / "config.json").read_text()) == {"model_type": "bert"}
    weight_map = json.loads((out / INDEX_NAME).read_text())["weight_map"]
    assert set(weight_map) == set(models[0]) and len(set(weight_map.values())) > 1  # really sharded


def test_half_precision_is_averaged_in_float32_and_kept_in_its_dtype(tmp_path):
    a, b = _model(0, torch.bfloat16), _model(1, torch.bfloat16)
    out = average_folders([spill_state_dict(a, tmp_path / "a"), spill_state_dict(b, tmp_path / "b")], [1, 1],
                          tmp_path / "g")
    result = load_state_dict(out)
    assert result["layer.0.weight"].dtype == torch.bfloat16
    expected = ((a["layer.0.weight"].float() + b["layer.0.weight"].float()) / 2).to(torch.bfloat16)
    assert torch.equal(result["layer.0.weight"], expected)
    assert (out / "model.safetensors").is_file()  # one shard: the usual single-file name


def test_mismatched_shapes_name_the_folder_and_tensor(tmp_path):
    a = _model(0)
    b = dict(_model(1), **{"layer.0.bias": torch.zeros(8)})
    folders = [spill_state_dict(a, tmp_path / "a"), spill_state_dict(b, tmp_path / "b")]
    with pytest.raises(ConfigError, match=r"b: tensor 'layer.0.bias' is torch.float32 \(8,\), expected .*\(16,\)"):
        average_folders(folders, [1, 1], tmp_path / "g")


def test_missing_tensor_and_bad_weights_are_clear_errors(tmp_path):
    a = _model(0)
    b = {k: v for k, v in _model(1).items() if k != "embed.weight"}
    folders = [spill_state_dict(a, tmp_path / "a"), spill_state_dict(b, tmp_path / "b")]
    with pytest.raises(ConfigError, match="tensors differ .*embed.weight"):
        average_folders(folders, [1, 1], tmp_path / "g")
    with pytest.raises(ConfigError, match="one weight per folder"):
        average_folders(folders, [1], tmp_path / "g")
    with pytest.raises(ConfigError, match="positive sum"):
        average_folders(folders, [0, 0], tmp_path / "g")
    with pytest.raises(ConfigError, match="no safetensors"):
        average_folders([tmp_path], [1], tmp_path / "g")
