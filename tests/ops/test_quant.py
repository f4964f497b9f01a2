"""Round-trip bounds and exact restoration for flaretune.ops.quant (CPU, no FLARE)."""

import math

import numpy as np
import pytest
import torch

from flaretune.errors import ConfigError
from flaretune.ops.quant import (QUANTIZATION_TYPES, dequantize, error_bound, is_quantizable, quantize,
                                 validate_qtype)

TYPES = list(QUANTIZATION_TYPES)
# (container, dtype) combinations a state dict can hold
INPUTS = [("torch", torch.float32), ("torch", torch.float16), ("torch", torch.bfloat16),
          ("numpy", np.float32), ("numpy", np.float16), ("numpy", np.float64)]
SHAPES = [(5000,), (4, 33, 77), (256, 384)]  # 1-D, 3-D with a partial last block, 2-D


def make(container, dtype, shape, seed=0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.02
    if container == "numpy":
        return x.numpy().astype(dtype)
    return x.to(dtype)


def out_eps(x) -> float:
    """Rounding of the restored value into the original dtype (relative, round to nearest)."""
    dtype = x.dtype if isinstance(x, torch.Tensor) else torch.from_numpy(np.zeros(1, x.dtype)).dtype
    return torch.finfo(dtype).eps / 2


def bound(meta: dict, x) -> float:
    """Max |x - x_hat| / max|x| allowed: ``error_bound`` (relative to the block absmax, hence to
    max|x|; see its docstring for the reasoning per type) plus rounding back into a 16-bit dtype."""
    b = error_bound(meta)
    return b + out_eps(x) * (1 + b) + 1e-7


def as_t(x):
    return torch.as_tensor(x).float() if isinstance(x, np.ndarray) else x.float()


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("container,dtype", INPUTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_restores_dtype_shape_container_within_bound(qtype, container, dtype, shape):
    x = make(container, dtype, shape)
    payload, meta = quantize(x, qtype)
    y = dequantize(payload, meta)
    assert type(y) is type(x) and type(payload) is type(x)
    assert y.dtype == x.dtype and tuple(y.shape) == tuple(x.shape)
    err = float((as_t(y) - as_t(x)).abs().max() / as_t(x).abs().max())
    assert err <= bound(meta, x), (qtype, err)


def _scaled_blocks(qtype, decades):
    bs = QUANTIZATION_TYPES[qtype].block_size
    scales = 10.0 ** torch.linspace(-decades, 0, 64).repeat_interleave(bs)
    x = torch.randn(64 * bs, generator=torch.Generator().manual_seed(1)) * scales
    payload, meta = quantize(x, qtype)
    err = (dequantize(payload, meta) - x).abs().view(64, bs).amax(dim=1)
    return err, x.abs().view(64, bs).amax(dim=1), meta


@pytest.mark.parametrize("qtype", ["blockwise8", "nf4", "fp4"])
def test_error_is_bounded_per_block_not_just_per_tensor(qtype):
    # block scales spanning 5 decades (16.6 octaves, inside the 20-octave absmax code):
    # a per-tensor scale would flush the small blocks to zero
    err, absmax, meta = _scaled_blocks(qtype, decades=5)
    assert torch.all(err <= error_bound(meta) * absmax * (1 + 1e-6))


def test_blockwise8_statistics_have_no_range_limit():
    err, absmax, meta = _scaled_blocks("blockwise8", decades=30)  # bfloat16 absmax: 8 exponent bits
    assert torch.all(err <= error_bound(meta) * absmax * (1 + 1e-6))


@pytest.mark.parametrize("qtype", ["nf4", "fp4"])
def test_blocks_below_the_absmax_code_range_keep_a_tiny_absolute_error(qtype):
    # 8 decades: blocks more than 2**20 below the largest share the 8-bit log code's floor 2**lo
    err, absmax, meta = _scaled_blocks(qtype, decades=8)
    floor = 2.0 ** meta["lo"]
    assert floor <= absmax.max() * 2.0 ** -19
    allowed = error_bound(meta) * torch.clamp(absmax, min=floor)
    assert torch.all(err <= allowed * (1 + 1e-6))


@pytest.mark.parametrize("qtype,rms_max", [("blockwise8", 0.01), ("nf4", 0.11), ("fp4", 0.13)])
def test_rms_error_on_normal_weights(qtype, rms_max):
    # int8: uniform rounding, absmax/127/sqrt(12) with absmax ~3.3 std in blocks of 1024 -> ~0.0075.
    # NF4 on N(0,1) blocks of 128: RMS/std ~0.096 (QLoRA's quantiles are MSE-friendly); FP4 ~0.11.
    x = torch.randn(1 << 18, generator=torch.Generator().manual_seed(2))
    y = dequantize(*quantize(x, qtype))
    assert float((y - x).pow(2).mean().sqrt() / x.std()) < rms_max


@pytest.mark.parametrize("qtype,ratio", [("float16", 0.5), ("bfloat16", 0.5), ("blockwise8", 0.2502), ("nf4", 0.1271),
                                         ("fp4", 0.1271)])
def test_payload_size_vs_fp32(qtype, ratio):
    x = torch.randn(1 << 20)
    payload, _ = quantize(x, qtype)
    assert payload.nbytes <= ratio * x.nbytes


@pytest.mark.parametrize("qtype", TYPES)
def test_all_zero_tensor_is_exact(qtype):
    x = torch.zeros(3000)
    assert torch.equal(dequantize(*quantize(x, qtype)), x)


@pytest.mark.parametrize("qtype", ["blockwise8", "nf4", "fp4"])
def test_non_finite_values_fail_clearly(qtype):
    x = torch.randn(4096)
    x[7] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize(x, qtype)


def test_float16_clamps_instead_of_overflowing():
    x = torch.randn(2048)
    x[0], x[1] = 1e6, -1e6
    y = dequantize(*quantize(x, "float16"))
    assert torch.isfinite(y).all() and y[0] == 65504 and y[1] == -65504


def test_bfloat16_numpy_payload_is_uint16_bits():
    x = np.random.default_rng(0).standard_normal(2048).astype(np.float32)
    payload, meta = quantize(x, "bfloat16")
    assert payload.dtype == np.uint16
    y = dequantize(payload, meta)
    assert y.dtype == np.float32 and np.allclose(y, x, rtol=2 ** -8, atol=0)


def test_non_contiguous_input():
    x = torch.randn(300, 200).t()
    assert not x.is_contiguous()
    y = dequantize(*quantize(x, "nf4"))
    assert y.shape == x.shape and float((y - x).abs().max() / x.abs().max()) < 0.16


@pytest.mark.parametrize("value,qtype,expected", [
    (torch.randn(1023), "nf4", False),          # tiny: bias/norm size
    (torch.randn(1024), "nf4", True),
    (torch.randn(8, 384), "nf4", True),         # LoRA matrices are not tiny
    (torch.arange(5000), "nf4", False),         # integer buffers
    (torch.randn(5000).half(), "float16", False),   # no gain from a 16-bit cast
    (torch.randn(5000).bfloat16(), "float16", False),
    (torch.randn(5000).half(), "nf4", True),
    (np.zeros(5000, np.float32), "blockwise8", True),
    (np.zeros(5000, np.int64), "blockwise8", False),
    ("not a tensor", "nf4", False),
])
def test_is_quantizable(value, qtype, expected):
    assert is_quantizable(value, qtype, min_numel=1024) is expected


def test_validate_qtype_lists_valid_types_and_accepts_nvflare_names():
    with pytest.raises(ConfigError, match=r"Invalid quantization_type 'int3' for QuantizeFilter; valid: "
                                          r"float16, bfloat16, blockwise8, nf4, fp4"):
        validate_qtype("int3")
    assert validate_qtype("NormFloat4") == "nf4" and validate_qtype("float4") == "fp4"


def test_meta_is_json_plain():
    import json
    _, meta = quantize(torch.randn(4096), "nf4")
    assert json.loads(json.dumps(meta)) == meta
    assert math.isfinite(meta["lo"]) and meta["step"] > 0
    assert set(quantize(torch.randn(4096), "blockwise8")[1]) == {"qtype", "dtype", "shape", "numpy", "block"}


@pytest.mark.parametrize("qtype", ["blockwise8", "nf4", "fp4"])
@pytest.mark.parametrize("chunk", [100, 5000, 1 << 24])  # below one block, odd, one chunk for all (as on GPUs)
def test_chunking_does_not_change_the_result(qtype, chunk, monkeypatch):
    import flaretune.ops.quant as q
    x = torch.randn(3, 7001, generator=torch.Generator().manual_seed(3))
    p_ref, m_ref = quantize(x, qtype)
    monkeypatch.setattr(q, "_CHUNK_ELEMS", chunk)
    p, m = quantize(x, qtype)
    assert torch.equal(p, p_ref) and m == m_ref
    assert torch.equal(dequantize(p, m), dequantize(p_ref, m_ref))


def test_empty_tensor_is_refused():
    with pytest.raises(ValueError, match="empty"):
        quantize(torch.zeros(0), "nf4")


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("x", [np.array(2.5, dtype=np.float32), torch.tensor(0.37),
                               np.arange(4000, dtype=np.float32).reshape(40, 100)[:, ::2]],
                         ids=["numpy-0d", "torch-0d", "numpy-strided"])
def test_scalars_and_strided_arrays_keep_their_shape(qtype, x):
    y = dequantize(*quantize(x, qtype))
    assert type(y) is type(x) and y.dtype == x.dtype and tuple(y.shape) == tuple(x.shape)
