"""The ``entropy`` type: error-bounded uniform codes, two a byte, zstd; exact bound, escapes, fail-closed decoding."""

import math

import numpy as np
import pytest
import torch

from flaretune.ops.pack import PackError, pack, unpack
from flaretune.ops.quant import QUANTIZATION_TYPES, decode_segments, dequantize, encode_segments, quantize

EPS = QUANTIZATION_TYPES["entropy"].error


def weights(n, seed=0, outlier_every=0):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.02
    if outlier_every:
        x[::outlier_every] *= 10.0
    return x


def steps_of(payload, n_segments):
    return torch.as_tensor(payload)[:4 * n_segments].clone().view(torch.float32)


def modes_of(payload, n_segments):
    return torch.as_tensor(payload)[4 * n_segments:5 * n_segments].tolist()  # 0: two codes a byte, 1: one


@pytest.mark.parametrize("x", [
    weights(100_000, outlier_every=997),
    torch.rand(50_001, generator=torch.Generator().manual_seed(2)) * 2 - 1,  # uniform: every code used
    -torch.rand(4097, generator=torch.Generator().manual_seed(3)),  # one sign only
    torch.full((3000,), 0.37),  # constant
    torch.zeros(2048).index_fill_(0, torch.tensor([5]), -4.0),  # a single non-zero value
], ids=["outliers", "uniform", "negative", "constant", "one-spike"])
def test_every_value_is_the_nearest_multiple_of_the_step_within_the_bound(x):
    payload, meta = quantize(x, "entropy")
    y = dequantize(payload, meta)
    step = float(steps_of(payload, 1)[0])
    absmax = float(x.abs().max())
    assert step == pytest.approx(2 * EPS * absmax, rel=2e-5) and step <= 2 * EPS * absmax
    codes = y.double() / step
    assert float((codes - codes.round()).abs().max()) < 1e-5  # whole steps (y is float32)
    assert float((x.double() / step - codes).abs().max()) <= 0.5 + 1e-5  # the nearest one
    assert float((x - y).abs().max()) <= EPS * absmax


def test_codes_beyond_a_nibble_travel_as_escapes_exactly():
    x = weights(20_000, seed=4, outlier_every=101)
    payload, meta = quantize(x, "entropy")
    step = float(steps_of(payload, 1)[0])
    expected = (x.double() / step).round()
    assert meta["escapes"] == int((expected.abs() > 7).sum()) > 20
    assert torch.equal((dequantize(payload, meta).double() / step).round(), expected)


def test_size_is_near_the_entropy_of_the_codes():
    """Gaussian weights with 1-in-10k outliers (the bench's): ~1.9 bits a value, within 20% of the codes' entropy.

    zstd's Huffman stage codes byte pairs of codes (measured: 16% above the codes' order-0 entropy here)."""
    x = weights(1 << 20, seed=5, outlier_every=10_000)
    payload, meta = quantize(x, "entropy")
    step = float(steps_of(payload, 1)[0])
    _, counts = np.unique((x.double() / step).round().numpy(), return_counts=True)
    p = counts / counts.sum()
    entropy_bytes = x.numel() * float(-(p * np.log2(p)).sum()) / 8
    assert entropy_bytes <= payload.numel() <= 1.20 * entropy_bytes + 64
    assert payload.numel() < 0.10 * 4 * x.numel()  # under 10% of fp32
    assert meta["nbytes"] == payload.numel()


def test_uniform_values_go_a_byte_a_code_without_escapes():
    """A LoRA A matrix starts uniform: most codes lie beyond [-7, 7], so escapes would cost 5 bytes each."""
    x = torch.rand(60_000, generator=torch.Generator().manual_seed(12)) * 2 - 1
    payload, meta = quantize(x, "entropy")
    assert modes_of(payload, 1) == [1] and meta["escapes"] == 0
    assert payload.numel() < 0.75 * x.numel()  # ~5.1 bits of entropy a code, under a byte
    assert float((x - dequantize(payload, meta)).abs().max()) <= EPS * float(x.abs().max())
    gauss, _ = quantize(weights(60_000, seed=12, outlier_every=10_000), "entropy")
    assert modes_of(gauss, 1) == [0]


def test_segments_keep_their_own_steps_and_odd_lengths():
    xs = [weights(7, seed=6) * 100, weights(1, seed=7), weights(4096, seed=8, outlier_every=50), torch.zeros(3),
          torch.rand(999, generator=torch.Generator().manual_seed(13)), weights(3001, seed=14, outlier_every=30)]
    payload, stats = encode_segments(xs, "entropy")
    back = decode_segments(payload, [x.numel() for x in xs], {"qtype": "entropy", **stats})
    steps = steps_of(payload, len(xs))
    assert modes_of(payload, len(xs)) == [1, 1, 0, 0, 1, 0] and stats["escapes"] > 0  # escapes after byte segments
    for x, y, step in zip(xs, back, steps.tolist()):
        assert y.shape == x.shape
        assert float((x - y).abs().max()) <= EPS * float(x.abs().max())
        alone, meta = quantize(x, "entropy")
        assert torch.equal(dequantize(alone, meta), y)  # as if each tensor were sent alone
        assert step == float(steps_of(alone, 1)[0])


def test_all_zero_and_tiny_tensors_decode_to_zeros():
    for x in (torch.zeros(5000), torch.full((5000,), 1e-31)):
        payload, meta = quantize(x, "entropy")
        y = dequantize(payload, meta)
        assert torch.equal(y, torch.zeros_like(x)) and meta["escapes"] == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_refused(bad):
    x = weights(4096)
    x[17] = bad
    with pytest.raises(ValueError, match="^cannot quantize a tensor holding NaN or inf$"):
        quantize(x, "entropy")


def test_numpy_float64_round_trip_keeps_container_and_dtype():
    x = np.random.default_rng(9).standard_normal((64, 65))
    payload, meta = quantize(x, "entropy")
    y = dequantize(payload, meta)
    assert isinstance(payload, np.ndarray) and payload.dtype == np.uint8
    assert isinstance(y, np.ndarray) and y.dtype == np.float64 and y.shape == x.shape
    assert np.abs(x - y).max() <= EPS * np.abs(x).max() * (1 + 1e-6)


def test_corrupt_payloads_fail_closed_with_one_line():
    x = weights(50_000, seed=10, outlier_every=300)
    payload, meta = quantize(x, "entropy")

    def refused(p, m, match):
        with pytest.raises(ValueError, match=match) as info:
            dequantize(p, m)
        assert "\n" not in str(info.value)

    flipped = payload.clone()
    flipped[40:60] ^= 0xFF  # inside the zstd frame
    refused(flipped, meta, "^entropy payload: ")
    refused(payload[:-10], meta, "^entropy payload: the code stream does not decompress")
    refused(payload, {**meta, "escapes": meta["escapes"] + 1}, "^entropy payload: the code stream declares")
    refused(payload, {**meta, "escapes": -1}, "field 'escapes' must be an int >= 0, got -1")
    import zstandard
    forged = torch.cat([payload[:5], torch.frombuffer(bytearray(zstandard.ZstdCompressor().compress(bytes(1 << 24))),
                                                      dtype=torch.uint8)])
    refused(forged, meta, "^entropy payload: the code stream declares 16777216 bytes, ")  # never allocated
    bad_mode = payload.clone()
    bad_mode[4] = 7
    refused(bad_mode, meta, "^entropy payload: a tensor's mode is not 0 .two codes a byte. or 1 .one.$")
    nan_step = payload.clone()
    nan_step[:4] = torch.tensor([math.nan], dtype=torch.float32).view(torch.uint8)
    refused(nan_step, meta, "step is negative or not finite")


def test_packed_adapter_round_trip_and_bad_meta_names_the_field():
    gen = torch.Generator().manual_seed(11)
    tensors = {f"layer.{i}.lora_{ab}.weight": torch.randn(8, 384, generator=gen) * 0.01
               for i in range(3) for ab in "AB"}
    tensors["classifier.bias"] = torch.randn(9, generator=gen)  # below min_numel: bit for bit
    payload, meta = pack(tensors, "entropy")
    back = unpack(payload, meta, "entropy")
    assert torch.equal(back["classifier.bias"], tensors["classifier.bias"])
    for name, x in tensors.items():
        assert float((x - back[name]).abs().max()) <= EPS * float(x.abs().max()), name
    with pytest.raises(PackError, match="field 'nbytes' must be an int >= 0, got 'x'"):
        unpack(payload, {**meta, "nbytes": "x"}, "entropy")
    with pytest.raises(PackError, match="field 'shapes' describes"):
        unpack(payload, {**meta, "nbytes": meta["nbytes"] + 1}, "entropy")
