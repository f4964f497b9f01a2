"""flaretune.ops.pack: many tensors in one payload, restored exactly in name, shape and dtype (CPU, no FLARE)."""

import json
import zlib

import numpy as np
import pytest
import torch

from flaretune.ops import pack as pack_mod
from flaretune.ops.pack import PackError, pack, unpack
from flaretune.ops.quant import QUANTIZATION_TYPES, dequantize, dtype_name, error_bound, quantize

TYPES = list(QUANTIZATION_TYPES)


def torch_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "layer.0.lora_A.weight": torch.randn(8, 384, generator=g) * 0.05,
        "layer.0.lora_B.weight": torch.randn(384, 8, generator=g) * 0.005,  # 10x smaller than its neighbour
        "emb.weight": (torch.randn(50, 40, 3, generator=g) * 0.02).half(),  # 6000: 46 full nf4 blocks + a tail
        "head.weight": (torch.randn(2000, generator=g) * 0.02).bfloat16(),
        "odd.weight": torch.randn(33, 65, generator=g).double(),  # 2145: short last block
        "head.bias": torch.randn(13, generator=g),  # below min_numel: raw
        "scale": torch.tensor(0.37),  # 0-d, raw
        "position_ids": torch.arange(2048),  # integer buffer: raw
        "mask": torch.rand(5, 7, generator=g) > 0.5,  # bool: raw
        "empty": torch.zeros(0, 4),  # empty: raw
    }


def numpy_dict(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "a": rng.standard_normal((64, 96)).astype(np.float32) * 0.02,
        "b": rng.standard_normal(4000).astype(np.float16),
        "c": rng.standard_normal((3, 1500)).astype(">f4"),  # big-endian: restored as native float32
        "bias": rng.standard_normal(13).astype(np.float32),
        "ids": np.arange(10, dtype=np.int32),
    }


def quantized_names(tensors, qtype):
    from flaretune.ops.quant import is_quantizable
    return [n for n, x in tensors.items() if is_quantizable(x, qtype)]


def own_block_absmax(x, bs):
    """Per-element absmax of the element's block, blocks counted from the tensor's own first element."""
    flat = torch.as_tensor(np.asarray(x, dtype=np.float32) if isinstance(x, np.ndarray) else x).float().reshape(-1)
    pad = (-flat.numel()) % bs
    blocks = torch.nn.functional.pad(flat.abs(), (0, pad)).view(-1, bs).amax(dim=1)
    return blocks.repeat_interleave(bs)[:flat.numel()]


def as_f64(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64)) if isinstance(x, np.ndarray) else x.double()


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("make", [torch_dict, numpy_dict])
def test_round_trip_restores_names_order_shapes_dtypes_and_container(qtype, make):
    ref = make()
    payload, meta = pack(ref, qtype)
    assert type(payload) is type(next(iter(ref.values())))
    assert str(payload.dtype) in ("uint8", "torch.uint8") and payload.ndim == 1
    back = unpack(payload, meta, qtype)
    assert list(back) == list(ref)
    for name, x in ref.items():
        y = back[name]
        want_dtype = np.dtype(x.dtype.name) if isinstance(x, np.ndarray) else x.dtype  # native byte order
        assert type(y) is type(x) and y.dtype == want_dtype and tuple(y.shape) == tuple(x.shape), name
        if name not in quantized_names(ref, qtype):  # raw: bit for bit
            assert np.array_equal(np.asarray(y), np.asarray(x)) if isinstance(x, np.ndarray) else torch.equal(y, x)


@pytest.mark.parametrize("qtype", ["float16", "bfloat16", "blockwise8"])
@pytest.mark.parametrize("make", [torch_dict, numpy_dict])
def test_casts_and_int8_give_exactly_what_each_tensor_gets_alone(qtype, make):
    # a block never spans two tensors and int8 statistics are per block: the same values bit for bit
    ref = make()
    back = unpack(*pack(ref, qtype), qtype)
    for name in quantized_names(ref, qtype):
        alone = dequantize(*quantize(ref[name], qtype))
        assert np.array_equal(np.asarray(back[name]), np.asarray(alone)) if isinstance(alone, np.ndarray) \
            else torch.equal(back[name], alone), name


@pytest.mark.parametrize("qtype", ["nf4", "fp4"])
@pytest.mark.parametrize("make", [torch_dict, numpy_dict])
def test_4bit_stays_within_the_bound_of_each_tensors_own_blocks(qtype, make):
    # the pack shares one absmax code range (its 'step'), but blocks start at each tensor: lora_B, 10x
    # smaller than lora_A before it, keeps its own block scale
    ref = make()
    payload, meta = pack(ref, qtype)
    back = unpack(payload, meta, qtype)
    bound = error_bound({"qtype": qtype, "step": meta["step"]})
    for name in quantized_names(ref, qtype):
        x = ref[name]
        err = (as_f64(back[name]) - as_f64(x)).abs().reshape(-1)
        eps = torch.finfo(getattr(torch, dtype_name(x)) if dtype_name(x) in ("float16", "bfloat16")
                          else torch.float32).eps / 2  # rounding back into the tensor's dtype
        allowed = own_block_absmax(x, meta["block"]).double() * (bound * (1 + 1e-6) + eps * (1 + bound))
        assert torch.all(err <= allowed + 1e-12), name


def test_4bit_pack_of_one_quantized_tensor_equals_quantizing_it_alone():
    ref = {"w": torch.randn(3, 7001, generator=torch.Generator().manual_seed(3)), "b": torch.randn(7)}
    back = unpack(*pack(ref, "nf4"), "nf4")
    assert torch.equal(back["w"], dequantize(*quantize(ref["w"], "nf4"))) and torch.equal(back["b"], ref["b"])


@pytest.mark.parametrize("qtype,nbytes", [
    # quantized: lora_A 3072 + lora_B 3072 values; raw: 13 fp32 bias values (52 B)
    ("float16", 2 * 6144 + 52),
    ("blockwise8", 6144 + 2 * 2 + 52),  # int8 codes + one bfloat16 absmax per tensor (3072 < 4096)
    ("nf4", 6144 // 2 + 48 + 52),  # 4-bit codes + one absmax code per 128 values
])
def test_payload_is_the_codes_plus_raw_bytes_and_nothing_else(qtype, nbytes):
    ref = {k: torch_dict()[k] for k in ("layer.0.lora_A.weight", "layer.0.lora_B.weight", "head.bias")}
    payload, meta = pack(ref, qtype)
    assert payload.numel() == nbytes
    assert set(meta) == {"index"} | ({"block"} if qtype == "blockwise8" else set()) | (
        {"block", "lo", "step"} if qtype == "nf4" else set())


def test_index_is_compact_json():
    ref = torch_dict()
    _, meta = pack(ref, "nf4")
    index = json.loads(zlib.decompressobj(zdict=pack_mod._INDEX_DICT).decompress(meta["index"]))
    assert index["names"] == list(ref) and index["shapes"][2] == [50, 40, 3] and index["dtypes"][3] == "bfloat16"
    assert index["raw"] == [5, 6, 7, 8, 9]
    assert len(meta["index"]) < 8 * len(ref) + 100


def test_nan_in_a_quantized_tensor_names_it():
    ref = torch_dict()
    ref["odd.weight"][1, 2] = float("nan")
    with pytest.raises(ValueError, match="cannot quantize 'odd.weight'.*NaN or inf"):
        pack(ref, "nf4")


# --- malformed packs fail closed, one line naming the field -------------------------------------------------


def _packed():
    ref = {"a": torch.randn(2048), "b": torch.randn(3)}
    return pack(ref, "nf4")


def _with_index(meta, **changes):
    payload_index = json.loads(zlib.decompressobj(zdict=pack_mod._INDEX_DICT).decompress(meta["index"]))
    payload_index.update(changes)
    deflate = zlib.compressobj(9, zdict=pack_mod._INDEX_DICT)
    return {**meta, "index": deflate.compress(json.dumps(payload_index).encode()) + deflate.flush()}


@pytest.mark.parametrize("change, message", [
    (lambda p, m: (p, {**m, "index": "not bytes"}), "field 'index' must be bytes"),
    (lambda p, m: (p, {**m, "index": b"garbage"}), "field 'index' is not zlib-compressed JSON"),
    (lambda p, m: (p, {**m, "index": zlib.compress(b'{"names": []}')}), "field 'dtypes' is missing from the index"),
    (lambda p, m: (p, {**m, "index": m["index"][:-6]}), "field 'index' is truncated"),
    (lambda p, m: (p, _with_index(m, names=None)), "field 'names' must be a list"),
    (lambda p, m: (p, _with_index(m, names=["a", "a"])), "field 'names' must be distinct strings"),
    (lambda p, m: (p, _with_index(m, shapes=[[2048]])), "field 'shapes' has 1 entries, 'names' has 2"),
    (lambda p, m: (p, _with_index(m, shapes=[[2048], [-3]])), "field 'shapes' entry 1 ('b') must be a list of ints"),
    # 2048 nf4 values: 1024 B of codes + 16 absmax codes; 'b' raw: 3 (claimed 4) float32
    (lambda p, m: (p, _with_index(m, shapes=[[2048], [4]])), "field 'shapes' describes 1056 payload bytes, the "
                                                              "payload holds 1052"),
    (lambda p, m: (p, _with_index(m, dtypes=["float32", "complex64"])), "field 'dtypes' entry 1 ('b'): 'complex64'"),
    (lambda p, m: (p, _with_index(m, raw=[0, 1])), "field 'shapes' describes"),
    (lambda p, m: (p, _with_index(m, raw=[2])), "field 'raw' must be increasing positions below 2"),
    (lambda p, m: (p, _with_index(m, dtypes=["int64", "float32"])), "field 'dtypes' entry 0 ('a'): a quantized"),
    (lambda p, m: (p, {k: v for k, v in m.items() if k != "block"}), "field 'block' must be a positive even int"),
    (lambda p, m: (p, {**m, "lo": float("nan")}), "field 'lo' must be a finite number"),
    (lambda p, m: (p.float(), m), "field 'payload' must be a 1-D uint8 tensor or array, got Tensor of float32"),
    (lambda p, m: ("bytes", m), "field 'payload' must be a 1-D uint8"),
    (lambda p, m: (p, ["not", "a", "dict"]), "meta must be a dict"),
])
def test_malformed_pack_fails_closed_naming_the_field(change, message):
    payload, meta = change(*_packed())
    with pytest.raises(PackError) as info:
        unpack(payload, meta, "nf4")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_index_from_another_dictionary_is_refused():
    payload, meta = _packed()
    blob = zlib.decompressobj(zdict=pack_mod._INDEX_DICT).decompress(meta["index"])
    other = zlib.compressobj(9, zdict=b"another dictionary")
    with pytest.raises(PackError, match="field 'index' is not zlib-compressed JSON"):
        unpack(payload, {**meta, "index": other.compress(blob) + other.flush()}, "nf4")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("qtype", TYPES)
def test_cuda_tensors_stay_on_their_device(qtype):
    ref = {k: v.cuda() for k, v in torch_dict().items()}
    payload, meta = pack(ref, qtype)
    assert payload.device == ref["head.bias"].device
    back = unpack(payload, meta, qtype)
    cpu = unpack(payload.cpu(), meta, qtype)
    for name, x in ref.items():
        assert back[name].device == x.device and back[name].dtype == x.dtype, name
        assert torch.equal(back[name].cpu(), cpu[name]), name  # the same values as on CPU
