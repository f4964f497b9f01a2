"""Many small tensors in one quantized payload: one array on the wire instead of one per tensor.

Pure tensor functions (no nvflare import): ``pack(tensors, qtype) -> (payload, meta)`` and
``unpack(payload, meta, qtype) -> tensors``. Why: FOBS frames every array (~200 B for a torch
tensor, ~280 B for numpy, plus its key), and per-tensor quantization meta costs as much again, so
a LoRA adapter of 26 tensors of ~3k elements pays ~12 KB (3.5% of its fp32 size) in framing.

Payload: one uint8 tensor (or array; the container and device of the inputs)::

    [quantized section | raw section]

The quantized section is :func:`~flaretune.ops.quant.encode_segments` of the tensors
``is_quantizable`` accepts, each one segment, so a block never spans two tensors: int8 and the
casts give each tensor exactly the values it gets alone, the 4-bit types share one absmax code
range (and so the bound of ``error_bound`` with the pack's ``step``). The raw section holds every
other tensor (below ``min_numel``, integer buffers, 16-bit tensors under a 16-bit cast) bit for bit.

Meta: ``{"index": bytes, ["block", "lo", "step"]}``; the tensors come back in the payload's
container (numpy or torch) and on its device. ``index`` is zlib-compressed
JSON ``{"names": [...], "dtypes": [...], "shapes": [...], "raw": [positions of raw tensors]}``
(with a preset dictionary of PEFT names): names share long prefixes, and compressed they cost
~5 B a tensor instead of ~75. Offsets
are not stored: each tensor starts where the one before it in its section ends, so no index can
point two tensors at the same bytes, and :func:`unpack` refuses an index whose sizes do not add up
to the payload exactly.
"""

import json
import math
import zlib
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from flaretune.ops.quant import (QUANTIZATION_TYPES, as_torch, decode_segments, dtype_name, encode_segments,
                                 is_quantizable, segments_nbytes)

_RAW_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
_MAX_INDEX_BYTES = 1 << 26  # decompressed index; 64 MiB is ~600k tensor names
# Preset DEFLATE dictionary (RFC 1950 FDICT): PEFT adapter naming of the families flaretune ships
# (BERT/MiniLM, Llama/SmolLM2) and the index skeleton, so that even the first name of a message is
# mostly back-references: the MiniLM adapter's index takes 118 B instead of 236. Part of the wire
# format: changing it needs a new format version (zlib checks its id and refuses another).
_INDEX_DICT = "".join([
    "lora_embedding_A.lora_embedding_B.lora_magnitude_vector.modules_to_save.lm_head.embed_tokens.word_embeddings."
    "mlp.gate_proj.mlp.up_proj.mlp.down_proj.attention.output.dense.intermediate.dense.output.dense.LayerNorm."
    "bfloat16.float16.base_model.model.score.weight.base_model.model.classifier.weight."
    "base_model.model.classifier.bias.",
    '{"names":["' + '","'.join(f"base_model.model.model.layers.0.self_attn.{m}_proj.lora_{ab}.weight"
                                for m in "qkvo" for ab in "AB") + '"],',
    '"dtypes":["float32","float32"],"shapes":[[8,384],[384,8],[8,576],[576,8]],"raw":[]}',
    '{"names":["' + '","'.join(f"base_model.model.bert.encoder.layer.0.attention.self.{m}.lora_{ab}.weight"
                                for m in ("query", "key", "value") for ab in "AB"),
]).encode()


class PackError(ValueError):
    """A pack's meta or payload does not describe a valid pack; the message names the field."""


def packable(x: Any) -> bool:
    """A dense torch tensor or numpy array whose dtype a pack can restore bit for bit."""
    if isinstance(x, torch.Tensor):
        return x.layout == torch.strided and dtype_name(x) in _RAW_DTYPES
    return isinstance(x, np.ndarray) and x.dtype.name in _RAW_DTYPES


def numel(x) -> int:
    return x.numel() if isinstance(x, torch.Tensor) else int(x.size)


def group_key(x) -> Tuple[str, str]:
    """Tensors of one pack share a container and device: ``("numpy", "cpu")`` or ``("torch", "cuda:0")``."""
    return ("numpy", "cpu") if isinstance(x, np.ndarray) else ("torch", str(x.device))


def pack(tensors: Dict[str, Any], qtype: str, block_size=None, min_numel: int = 1024) -> Tuple[Any, dict]:
    """One payload and its meta for ``tensors`` (all :func:`packable`, one :func:`group_key`).

    A quantized tensor holding NaN or inf raises ValueError naming it (block types), as ``quantize``.
    """
    names = list(tensors)
    converted = [as_torch(tensors[n]) for n in names]
    is_numpy = isinstance(tensors[names[0]], np.ndarray) if names else False
    quantized = [i for i, n in enumerate(names) if is_quantizable(tensors[n], qtype, min_numel)]
    raw = sorted(set(range(len(names))) - set(quantized))
    flats = [converted[i][0].detach().reshape(-1) for i in quantized]
    try:
        section, stats = encode_segments(flats, qtype, block_size) if flats else (None, {})
    except ValueError as err:
        bad = next((names[i] for i, f in zip(quantized, flats) if not bool(torch.isfinite(f).all())), None)
        raise ValueError(f"cannot quantize {bad!r}: {err}" if bad else str(err)) from err
    parts = [section.reshape(-1).view(torch.uint8)] if section is not None else []
    parts += [converted[i][0].detach().contiguous().reshape(-1).view(torch.uint8) for i in raw]
    device = converted[0][0].device if converted else torch.device("cpu")
    payload = torch.cat(parts) if parts else torch.empty(0, dtype=torch.uint8, device=device)
    index = {"names": names, "dtypes": [dtype_name(tensors[n]) for n in names],
             "shapes": [list(tensors[n].shape) for n in names], "raw": raw}
    deflate = zlib.compressobj(9, zdict=_INDEX_DICT)
    blob = deflate.compress(json.dumps(index, separators=(",", ":")).encode()) + deflate.flush()
    meta = {"index": blob, **stats}
    return (payload.cpu().numpy() if is_numpy else payload), meta


def unpack(payload, meta: dict, qtype: str) -> Dict[str, Any]:
    """Inverse of :func:`pack`: every tensor in its name, shape and dtype, in the payload's container and device.

    Fails closed: a malformed meta, index or payload raises :class:`PackError` naming the field.
    """
    if not isinstance(meta, dict):
        raise PackError(f"meta must be a dict, got {type(meta).__name__}")
    stats = _read_stats(meta, qtype)
    names, dtypes, shapes, raw = _read_index(meta.get("index"))
    if not (isinstance(payload, np.ndarray) and payload.dtype == np.uint8 or
            isinstance(payload, torch.Tensor) and payload.dtype == torch.uint8) or payload.ndim != 1:
        raise PackError(f"field 'payload' must be a 1-D uint8 tensor or array, got {_describe(payload)}")
    raw_set = set(raw)
    quantized = [i for i in range(len(names)) if i not in raw_set]
    for i in quantized:
        if dtypes[i] not in _FLOAT_DTYPES or math.prod(shapes[i]) == 0:
            raise PackError(f"field 'dtypes' entry {i} ({names[i]!r}): a quantized tensor must be a non-empty "
                            f"float tensor, got {dtypes[i]} of shape {shapes[i]}")
    sizes = [math.prod(shapes[i]) for i in quantized]
    q_bytes = segments_nbytes(sizes, stats) if sizes else 0
    raw_bytes = [math.prod(shapes[i]) * _itemsize(dtypes[i]) for i in raw]
    if q_bytes + sum(raw_bytes) != len(payload):
        raise PackError(f"field 'shapes' describes {q_bytes + sum(raw_bytes)} payload bytes, the payload holds "
                        f"{len(payload)}")
    buf, _ = as_torch(payload)
    out: List[Any] = [None] * len(names)
    if sizes:
        for i, flat in zip(quantized, decode_segments(buf[:q_bytes], sizes, stats)):
            out[i] = flat.reshape(shapes[i]).to(getattr(torch, dtypes[i]), copy=True)  # owns its memory
    offset = q_bytes
    for i, nbytes in zip(raw, raw_bytes):  # clone: aligned for the dtype view, and owns its memory
        out[i] = buf[offset:offset + nbytes].clone().view(getattr(torch, dtypes[i])).reshape(shapes[i])
        offset += nbytes
    is_numpy = isinstance(payload, np.ndarray)
    return {n: (t.numpy() if is_numpy else t) for n, t in zip(names, out)}


def _read_stats(meta: dict, qtype: str) -> dict:
    if qtype not in QUANTIZATION_TYPES:
        raise PackError(f"field 'qtype' must be one of {', '.join(QUANTIZATION_TYPES)}, got {qtype!r}")
    qt = QUANTIZATION_TYPES[qtype]
    stats = {"qtype": qt.name}
    if qt.kind == "cast":
        return stats
    if qt.kind == "entropy":
        for field in ("nbytes", "escapes"):
            value = meta.get(field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PackError(f"field {field!r} must be an int >= 0, got {value!r}")
            stats[field] = value
        return stats
    block = meta.get("block")
    if isinstance(block, bool) or not isinstance(block, int) or block <= 0 or (qt.kind == "4bit" and block % 2):
        raise PackError(f"field 'block' must be a positive{' even' if qt.kind == '4bit' else ''} int, got {block!r}")
    stats["block"] = block
    if qt.kind == "4bit":
        for field in ("lo", "step"):
            value = meta.get(field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise PackError(f"field {field!r} must be a finite number, got {value!r}")
            stats[field] = float(value)
    return stats


def _read_index(blob) -> Tuple[list, list, list, list]:
    if not isinstance(blob, (bytes, bytearray)):
        raise PackError(f"field 'index' must be bytes (zlib-compressed JSON), got {_describe(blob)}")
    try:
        inflate = zlib.decompressobj(zdict=_INDEX_DICT)
        text = inflate.decompress(bytes(blob), _MAX_INDEX_BYTES)
        if inflate.unconsumed_tail or not inflate.eof:
            raise PackError(f"field 'index' is truncated or inflates beyond {_MAX_INDEX_BYTES} bytes")
        index = json.loads(text)
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PackError(f"field 'index' is not zlib-compressed JSON ({err})") from err
    if not isinstance(index, dict):
        raise PackError(f"field 'index' must hold a JSON object, got {type(index).__name__}")
    names = _list(index, "names")
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise PackError("field 'names' must be distinct strings")
    dtypes, shapes, raw = _list(index, "dtypes", len(names)), _list(index, "shapes", len(names)), _list(index, "raw")
    for i, d in enumerate(dtypes):
        if d not in _RAW_DTYPES:
            raise PackError(f"field 'dtypes' entry {i} ({names[i]!r}): {d!r} is not one of {', '.join(_RAW_DTYPES)}")
    for i, s in enumerate(shapes):
        if not isinstance(s, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in s):
            raise PackError(f"field 'shapes' entry {i} ({names[i]!r}) must be a list of ints >= 0, got {s!r}")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in raw) or raw != sorted(set(raw)) or (
            raw and not 0 <= raw[0] <= raw[-1] < len(names)):
        raise PackError(f"field 'raw' must be increasing positions below {len(names)}, got {raw!r}")
    return names, dtypes, shapes, raw


def _list(index: dict, field: str, length=None) -> list:
    if field not in index:
        raise PackError(f"field {field!r} is missing from the index")
    value = index[field]
    if not isinstance(value, list):
        raise PackError(f"field {field!r} must be a list, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise PackError(f"field {field!r} has {len(value)} entries, 'names' has {length}")
    return value


def _itemsize(dtype: str) -> int:
    return torch.empty(0, dtype=getattr(torch, dtype)).element_size()


def _describe(x) -> str:
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return f"{type(x).__name__} of {dtype_name(x)}, shape {list(x.shape)}"
    return type(x).__name__
