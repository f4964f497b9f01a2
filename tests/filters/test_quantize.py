"""QuantizeFilter / DequantizeFilter on real DXOs with a bare FLContext, through FOBS as FLARE sends them."""

import inspect
import logging

import numpy as np
import pytest
import torch
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.decomposers import common_decomposers
from nvflare.app_opt.pt.decomposers import TensorDecomposer
from nvflare.fuel.utils import fobs

from flaretune.errors import ConfigError
from flaretune.filters import QUANT_META_KEY, DequantizeFilter, QuantizeFilter, filter_config
from flaretune.ops.quant import dequantize, quantize

fobs.register(TensorDecomposer)
common_decomposers.register()

TYPES = ["float16", "bfloat16", "blockwise8", "nf4", "fp4"]
BOUND = {"float16": 5e-4, "bfloat16": 4e-3, "blockwise8": 4.2e-3, "nf4": 0.162, "fp4": 0.178}  # see tests/ops


def state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "q_proj.weight": torch.randn(64, 96, generator=g) * 0.02,
        "lora_A.weight": torch.randn(8, 384, generator=g) * 0.02,  # LoRA: small but not tiny
        "emb.weight": (torch.randn(50, 40, 3, generator=g) * 0.02).half(),
        "head.weight": (torch.randn(2000, generator=g) * 0.02).bfloat16(),
        "np.weight": np.random.default_rng(seed).standard_normal((33, 65)).astype(np.float32),
        "np16.weight": np.random.default_rng(seed).standard_normal(4000).astype(np.float16),
        "q_proj.bias": torch.randn(64, generator=g),  # tiny: passes through
        "position_ids": torch.arange(2048),  # integer buffer: passes through
    }


def through_wire(shareable):
    return fobs.loads(fobs.dumps(shareable))


def rel_err(x, y):
    x, y = torch.as_tensor(x).float(), torch.as_tensor(y).float()
    return float((x - y).abs().max() / x.abs().max())


@pytest.mark.parametrize("pack_numel", [0, 1 << 20], ids=["unpacked", "packed"])
@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("kind", [DataKind.WEIGHTS, DataKind.WEIGHT_DIFF])
def test_round_trip_through_fobs_restores_exact_dtype_and_shape(qtype, kind, pack_numel):
    ref = state()
    shareable = DXO(kind, dict(ref), meta={"NUM_STEPS_CURRENT_ROUND": 7}).to_shareable()
    sent = QuantizeFilter(quantization_type=qtype, pack_numel=pack_numel).process(shareable, FLContext())
    assert len(from_shareable(sent).data) == (2 if pack_numel else len(ref))  # packed: one torch, one numpy array
    back = from_shareable(DequantizeFilter().process(through_wire(sent), FLContext()))
    assert back.data_kind == kind
    assert back.meta["NUM_STEPS_CURRENT_ROUND"] == 7 and QUANT_META_KEY not in back.meta
    assert set(back.data) == set(ref)
    for name, x in ref.items():
        y = back.data[name]
        assert type(y) is type(x) and y.dtype == x.dtype and tuple(y.shape) == tuple(x.shape), name
        if name in ("q_proj.bias", "position_ids") or (qtype in ("float16", "bfloat16") and x.dtype in (
                torch.float16, torch.bfloat16, np.float16)):
            assert np.array_equal(np.asarray(torch.as_tensor(y).float()), np.asarray(torch.as_tensor(x).float())), name
        else:
            assert rel_err(x, y) <= BOUND[qtype] + 8e-3 * (x.dtype in (torch.bfloat16,)), (name, rel_err(x, y))


def test_unpacked_meta_contract_is_version_1_and_passes_tiny_tensors_through():
    ref = state()
    dxo = from_shareable(QuantizeFilter("nf4", pack_numel=0).process(DXO(DataKind.WEIGHTS, dict(ref)).to_shareable(),
                                                                     FLContext()))
    info = dxo.meta[QUANT_META_KEY]
    assert info["version"] == 1 and info["qtype"] == "nf4"
    assert set(info["tensors"]) == {"q_proj.weight", "lora_A.weight", "emb.weight", "head.weight", "np.weight",
                                    "np16.weight"}
    assert info["tensors"]["emb.weight"] == {"qtype": "nf4", "dtype": "float16", "shape": [50, 40, 3],
                                             "numpy": False, "block": 128, "lo": pytest.approx(info["tensors"]
                                             ["emb.weight"]["lo"]), "step": pytest.approx(info["tensors"]
                                             ["emb.weight"]["step"])}
    assert dxo.data["q_proj.bias"] is ref["q_proj.bias"] and dxo.data["position_ids"] is ref["position_ids"]
    assert isinstance(dxo.data["np.weight"], np.ndarray) and dxo.data["np.weight"].dtype == np.uint8
    assert info["bytes_after"] < 0.2 * info["bytes_before"] + ref["position_ids"].nbytes + ref["q_proj.bias"].nbytes
    assert "packs" not in info


def test_packed_meta_contract():
    # every tensor of state() is below pack_numel: one pack per container (torch, numpy), in first-seen order
    ref = state()
    big = torch.randn(2048, 1024)
    dxo = from_shareable(QuantizeFilter("nf4").process(DXO(DataKind.WEIGHTS, {**ref, "big": big}).to_shareable(),
                                                       FLContext()))
    info = dxo.meta[QUANT_META_KEY]
    assert info["version"] == 2 and info["qtype"] == "nf4" and list(info["tensors"]) == ["big"]
    assert list(dxo.data) == ["big", "flaretune_pack.0", "flaretune_pack.1"]
    assert [set(p) for p in info["packs"]] == [{"index", "block", "lo", "step"}] * 2
    torch_pack, numpy_pack = dxo.data["flaretune_pack.0"], dxo.data["flaretune_pack.1"]
    assert torch_pack.dtype == torch.uint8 and numpy_pack.dtype == np.uint8
    # torch: q_proj (6144) + lora_A (3072) + emb (6000 -> 47 blocks) + head (2000 -> 16 blocks) nf4,
    # then q_proj.bias (64 fp32) and position_ids (2048 int64) raw
    assert torch_pack.numel() == (48 + 24 + 47 + 16) * 65 + 64 * 4 + 2048 * 8
    assert numpy_pack.size == (17 + 32) * 65  # np.weight 2145 -> 17 blocks, np16.weight 4000 -> 32
    assert info["bytes_after"] == big.numel() // 2 + 2048 * 1024 // 128 + torch_pack.numel() + numpy_pack.size


def test_old_unpacked_format_still_decodes():
    # a version-1 message as flaretune wrote it before packing: one payload per tensor, no "packs"
    ref = state()
    data, tensors = {}, {}
    for name, value in ref.items():
        if name in ("q_proj.bias", "position_ids"):
            data[name] = value
        else:
            data[name], tensors[name] = quantize(value, "blockwise8")
    meta = {QUANT_META_KEY: {"version": 1, "qtype": "blockwise8", "bytes_before": 1, "bytes_after": 1,
                             "tensors": tensors}}
    back = from_shareable(DequantizeFilter().process(through_wire(DXO(DataKind.WEIGHTS, data, meta).to_shareable()),
                                                     FLContext())).data
    assert list(back) == list(ref)
    for name, x in ref.items():
        assert type(back[name]) is type(x) and back[name].dtype == x.dtype and back[name].shape == x.shape
        want = x if name in ("q_proj.bias", "position_ids") else dequantize(*quantize(x, "blockwise8"))
        assert torch.equal(torch.as_tensor(back[name]).float(), torch.as_tensor(want).float()), name


def _packed_message(**info_changes):
    sent = QuantizeFilter("nf4").process(DXO(DataKind.WEIGHTS, state()).to_shareable(), FLContext())
    dxo = from_shareable(through_wire(sent))
    dxo.meta[QUANT_META_KEY].update(info_changes)
    return dxo


@pytest.mark.parametrize("change, message", [
    (lambda d: d.meta[QUANT_META_KEY]["packs"][0].update(index=b"junk"),
     "DequantizeFilter: packed tensors 'flaretune_pack.0': field 'index' is not zlib-compressed JSON"),
    (lambda d: d.meta[QUANT_META_KEY]["packs"][1].pop("lo"),
     "DequantizeFilter: packed tensors 'flaretune_pack.1': field 'lo' must be a finite number, got None"),
    (lambda d: d.data.pop("flaretune_pack.1"),
     "DequantizeFilter: packed tensors 'flaretune_pack.1' are missing from the DXO data"),
    (lambda d: d.meta[QUANT_META_KEY].update(packs={"flaretune_pack.0": {}}),
     "DequantizeFilter: flaretune_quantization field 'packs' must be a list, got dict"),
    (lambda d: d.meta[QUANT_META_KEY].update(version=3), "DequantizeFilter: unsupported flaretune_quantization "
                                                         "version 3"),
    (lambda d: d.meta[QUANT_META_KEY].update(qtype="int2"),
     "DequantizeFilter: packed tensors 'flaretune_pack.0': field 'qtype' must be one of float16, bfloat16"),
    (lambda d: d.data.update({"np.weight": np.zeros(3)}),
     "DequantizeFilter: packed tensors 'flaretune_pack.1': field 'names' holds 'np.weight', which the DXO also"),
])
def test_malformed_packed_message_fails_closed_with_one_line(change, message):
    dxo = _packed_message()
    change(dxo)
    with pytest.raises(ValueError) as info:
        DequantizeFilter().process(dxo.to_shareable(), FLContext())
    assert message in str(info.value) and "\n" not in str(info.value)


def test_packed_tensors_keep_the_pack_error_bound_and_exact_raw_values():
    ref = state()
    back = from_shareable(DequantizeFilter().process(through_wire(QuantizeFilter("blockwise8").process(
        DXO(DataKind.WEIGHTS, dict(ref)).to_shareable(), FLContext())), FLContext())).data
    for name in ("q_proj.weight", "lora_A.weight", "np.weight"):  # int8: exactly what the tensor gets alone
        want = dequantize(*quantize(ref[name], "blockwise8"))
        assert np.array_equal(np.asarray(back[name]), np.asarray(want)), name
    for name in ("q_proj.bias", "position_ids"):  # raw: bit for bit
        assert torch.equal(back[name], ref[name]), name


def test_reserved_pack_name_and_pack_numel_are_checked():
    data = {**state(), "flaretune_pack.0": torch.randn(4)}
    with pytest.raises(ValueError, match="the DXO has an entry 'flaretune_pack.0', a name reserved for packed tensors"):
        QuantizeFilter("nf4").process(DXO(DataKind.WEIGHTS, data).to_shareable(), FLContext())
    with pytest.raises(ConfigError, match="pack_numel for QuantizeFilter must be an int >= 0, got -1"):
        QuantizeFilter(pack_numel=-1)


def test_one_packable_tensor_is_not_packed():
    # a pack of one saves no framing: the message stays version 1
    dxo = from_shareable(QuantizeFilter("nf4").process(DXO(DataKind.WEIGHTS, {"w": torch.randn(4096)}).to_shareable(),
                                                       FLContext()))
    assert dxo.meta[QUANT_META_KEY]["version"] == 1 and list(dxo.data) == ["w"]


def test_input_dxo_is_not_modified():
    # on the server every client's task copy shares one data dict
    ref = state()
    data, meta = dict(ref), {"k": 1}
    QuantizeFilter("blockwise8").process(DXO(DataKind.WEIGHTS, data, meta).to_shareable(), FLContext())
    assert meta == {"k": 1} and all(data[k] is ref[k] for k in ref)


def test_already_quantized_dxo_is_not_quantized_again():
    f = QuantizeFilter("nf4")
    once = f.process(DXO(DataKind.WEIGHTS, state()).to_shareable(), FLContext())
    payload = from_shareable(once).data["flaretune_pack.0"]
    twice = from_shareable(f.process(once, FLContext()))
    assert twice.data["flaretune_pack.0"] is payload


def test_dequantizer_leaves_unquantized_dxo_untouched():
    ref = state()
    back = from_shareable(DequantizeFilter().process(DXO(DataKind.WEIGHTS, dict(ref), {"a": 1}).to_shareable(),
                                                     FLContext()))
    assert back.meta == {"a": 1} and all(back.data[k] is ref[k] for k in ref)


def test_other_data_kinds_are_untouched():
    metrics = DXO(DataKind.METRICS, {"acc": 0.9, "w": torch.randn(4096)})
    out = from_shareable(QuantizeFilter("nf4").process(metrics.to_shareable(), FLContext()))
    assert out.data["w"] is metrics.data["w"] and QUANT_META_KEY not in out.meta


def test_unknown_type_fails_at_construction_with_the_valid_list():
    with pytest.raises(ConfigError, match="Invalid quantization_type 'int2' for QuantizeFilter; valid: float16, "
                                          "bfloat16, blockwise8, nf4, fp4"):
        QuantizeFilter(quantization_type="int2")
    with pytest.raises(ConfigError, match="min_numel"):
        QuantizeFilter(min_numel=-1)
    with pytest.raises(ConfigError, match="block_size"):
        QuantizeFilter(block_size=63)


@pytest.mark.parametrize("cls", [QuantizeFilter, DequantizeFilter])
def test_every_constructor_argument_is_kept_under_its_name(cls):
    # FLARE's job exporter reads self.<arg> for each constructor argument
    obj = cls()
    for name in inspect.signature(cls.__init__).parameters:
        if name != "self":
            assert hasattr(obj, name), name


def test_bytes_and_round_are_logged(caplog):
    shareable = DXO(DataKind.WEIGHTS, state()).to_shareable()
    shareable.set_header("current_round", 3)
    with caplog.at_level(logging.INFO):
        QuantizeFilter("nf4").process(shareable, FLContext())
    assert any("round 3" in r.getMessage() and "quantized 6/8 tensors (8 packed into 2 arrays)" in r.getMessage()
               and "MB ->" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("pack_numel", [0, 1 << 20], ids=["unpacked", "packed"])
def test_nan_weights_fail_closed_naming_the_tensor(pack_numel):
    data = {"v": torch.randn(2048), "w": torch.full((2048,), float("nan"))}
    with pytest.raises(ValueError, match="QuantizeFilter: cannot quantize 'w': cannot quantize a tensor holding NaN"):
        QuantizeFilter("nf4", pack_numel=pack_numel).process(DXO(DataKind.WEIGHTS, data).to_shareable(), FLContext())


def moderate_state_dict(biases: bool):
    """2.1M fp32 params, two transformer blocks of hidden 256 plus an embedding.

    Without biases it is shaped like Llama/SmolLM2 (RMSNorm weights are the only tiny tensors,
    0.05% of the parameters); with biases like BERT (0.3% here, 0.11% in BERT-base).
    """
    g = torch.Generator().manual_seed(0)
    sd = {"emb.weight": torch.randn(4096, 256, generator=g) * 0.02}
    for i in range(2):
        for n, s in {"q": (256, 256), "k": (256, 256), "v": (256, 256), "o": (256, 256),
                     "up": (1024, 256), "down": (256, 1024)}.items():
            sd[f"{i}.{n}.weight"] = torch.randn(s, generator=g) * 0.02
            if biases:
                sd[f"{i}.{n}.bias"] = torch.randn(s[0], generator=g) * 0.02
        sd[f"{i}.norm1.weight"], sd[f"{i}.norm2.weight"] = torch.ones(256), torch.ones(256)
    return sd


def wire_pct(sd, qtype, **kwargs):
    sent = QuantizeFilter(qtype, **kwargs).process(DXO(DataKind.WEIGHTS, sd).to_shareable(), FLContext())
    return 100.0 * len(fobs.dumps(sent)) / sum(t.nbytes for t in sd.values())


@pytest.mark.parametrize("qtype,target_pct", [("float16", 50.1), ("bfloat16", 50.1), ("blockwise8", 25.1),
                                              ("nf4", 13.0), ("fp4", 13.0)])
def test_wire_size_targets_with_fobs(qtype, target_pct):
    assert wire_pct(moderate_state_dict(biases=False), qtype) <= target_pct


def test_wire_size_with_fp32_biases():
    # fp32 biases that pass through cost 0.75 x their share on top of the 8-bit floor of 25%:
    # on a BERT-like dict blockwise8 needs min_numel=0 (biases quantized too) to stay under 25.1%
    sd = moderate_state_dict(biases=True)
    assert wire_pct(sd, "nf4") <= 13.0 and wire_pct(sd, "fp4") <= 13.0
    assert wire_pct(sd, "blockwise8") > 25.1
    assert wire_pct(sd, "blockwise8", min_numel=0) <= 25.1


def test_filter_config_names_tasks_and_both_directions():
    server = filter_config("server", ["train"], "nf4")
    client = filter_config("client", ["train"], "nf4", keep_fraction=0.1)
    assert server["task_data_filters"][0]["filters"][0]["path"] == "flaretune.filters.quantize.QuantizeFilter"
    assert server["task_result_filters"][0]["filters"][0]["path"] == "flaretune.filters.quantize.DequantizeFilter"
    assert [f["path"].rsplit(".", 1)[1] for f in client["task_result_filters"][0]["filters"]] == [
        "TopKSparsifyFilter", "QuantizeFilter"]
    assert client["task_data_filters"][0]["tasks"] == ["train"]
    with pytest.raises(ValueError, match="tasks"):
        filter_config("server", ["*"])
