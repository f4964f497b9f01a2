"""TopKSparsifyFilter / DensifyFilter on real DXOs, alone and chained with quantization."""

import inspect

import numpy as np
import pytest
import torch
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.decomposers import common_decomposers
from nvflare.app_opt.pt.decomposers import TensorDecomposer
from nvflare.fuel.utils import fobs

from flaretune.errors import ConfigError
from flaretune.filters import (SPARSE_META_KEY, DensifyFilter, DequantizeFilter, QuantizeFilter,
                               TopKSparsifyFilter)

fobs.register(TensorDecomposer)
common_decomposers.register()


def diff(seed):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(64, 64, generator=g) * 1e-3, "b": torch.randn(64, generator=g) * 1e-3,
            "np": np.random.default_rng(seed).standard_normal(3000).astype(np.float32) * 1e-3}


def wire(s):
    return fobs.loads(fobs.dumps(s))


def test_sparsify_then_densify_on_weight_diff():
    ref = diff(0)
    sent = TopKSparsifyFilter(keep_fraction=0.1).process(DXO(DataKind.WEIGHT_DIFF, dict(ref)).to_shareable(),
                                                         FLContext())
    info = from_shareable(sent).meta[SPARSE_META_KEY]
    assert set(info["tensors"]) == {"w", "np"} and info["tensors"]["w"]["k"] == 410
    back = from_shareable(DensifyFilter().process(wire(sent), FLContext()))
    assert SPARSE_META_KEY not in back.meta
    assert back.data["b"].shape == (64,) and torch.equal(back.data["b"], ref["b"])  # tiny: dense
    assert isinstance(back.data["np"], np.ndarray) and back.data["np"].shape == (3000,)
    w = back.data["w"]
    assert w.dtype == torch.float32 and torch.count_nonzero(w) == 410
    kept = w != 0
    assert torch.equal(w[kept], ref["w"][kept])
    assert ref["w"][kept].abs().min() >= ref["w"][~kept].abs().max()


def test_weights_are_not_sparsified():
    data = {"w": torch.randn(4096)}
    out = from_shareable(TopKSparsifyFilter().process(DXO(DataKind.WEIGHTS, data).to_shareable(), FLContext()))
    assert out.data["w"] is data["w"]


def test_error_feedback_lives_in_the_client_filter_across_rounds():
    client, server = TopKSparsifyFilter(keep_fraction=0.05), DensifyFilter()
    true_sum = torch.zeros(64, 64)
    received = torch.zeros(64, 64)
    for rnd in range(40):
        d = {"w": torch.full((64, 64), 1e-3) + torch.randn(64, 64, generator=torch.Generator().manual_seed(rnd)) * 1e-3}
        true_sum += d["w"]
        s = client.process(DXO(DataKind.WEIGHT_DIFF, d).to_shareable(), FLContext())
        received += from_shareable(server.process(wire(s), FLContext())).data["w"]
    # what the server got plus what the client still holds is everything the client produced
    assert client.residual_norm() == pytest.approx(float((true_sum - received).norm()), rel=1e-4)
    assert float((true_sum - received).norm() / true_sum.norm()) < 0.3


def test_chain_sparsify_quantize_wire_dequantize_densify():
    ref = diff(1)
    s = DXO(DataKind.WEIGHT_DIFF, dict(ref)).to_shareable()
    for f in (TopKSparsifyFilter(0.2), QuantizeFilter("nf4", min_numel=16)):
        s = f.process(s, FLContext())
    s = wire(s)
    for f in (DequantizeFilter(), DensifyFilter()):
        s = f.process(s, FLContext())
    back = from_shareable(s)
    assert back.data["w"].shape == (64, 64) and torch.count_nonzero(back.data["w"]) == 820
    assert back.data["b"].dtype == torch.float32  # tiny and dense: quantized (min_numel=16) and restored
    assert float((back.data["b"] - ref["b"]).abs().max() / ref["b"].abs().max()) < 0.16


def test_construction_checks_and_exported_arguments():
    with pytest.raises(ConfigError, match="keep_fraction"):
        TopKSparsifyFilter(keep_fraction=1.5)
    f = TopKSparsifyFilter()
    for name in inspect.signature(TopKSparsifyFilter.__init__).parameters:
        if name != "self":
            assert hasattr(f, name), name
