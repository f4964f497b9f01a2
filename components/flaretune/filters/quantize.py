"""FLARE DXO filters that quantize model weights/diffs for transfer and restore them on arrival.

Thin glue over :mod:`flaretune.ops.quant`. Unlike NVFlare's ``ModelQuantizer`` (which calls
``.cuda()`` for blockwise8/float4/normfloat4), these run on CPU and keep tensors on their device.

DXO meta contract (key ``QUANT_META_KEY = "flaretune_quantization"``)::

    {"version": 1, "qtype": "nf4", "bytes_before": int, "bytes_after": int,
     "tensors": {name: {"qtype", "dtype", "shape", "numpy", ["block", "lo", "step"]}}}

Only the tensors listed under ``"tensors"`` are quantized (``data[name]`` is then one uint8 or
16-bit array); every other entry of ``dxo.data`` passed through unchanged. The dequantizer needs no
configuration: it reads this key, restores the listed tensors and removes the key. A DXO without
the key is left untouched, and a DXO that already carries it is not quantized twice.

Filters never modify the incoming DXO's data or meta in place: on the server one task data
object is shared by every client's copy of the task.
"""

from typing import Optional

from nvflare.apis.dxo import DXO, DataKind, MetaKey
from nvflare.apis.dxo_filter import DXOFilter
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.app_constant import AppConstants

from flaretune.errors import ConfigError
from flaretune.ops.quant import dequantize, is_quantizable, payload_nbytes, quantize, validate_qtype

QUANT_META_KEY = "flaretune_quantization"
_FORMAT_VERSION = 1
_KINDS = [DataKind.WEIGHTS, DataKind.WEIGHT_DIFF]


class QuantizeFilter(DXOFilter):
    """Quantize WEIGHTS / WEIGHT_DIFF DXOs (torch tensors or numpy arrays) before they are sent.

    Args:
        quantization_type: one of ``float16``, ``bfloat16``, ``blockwise8``, ``nf4``, ``fp4``
            (NVFlare's ``normfloat4``/``float4`` are accepted as aliases).
        min_numel: tensors with fewer elements (biases, norms) pass through unquantized.
        log_bytes: log tensor bytes before/after for each round.
        block_size: override the type's block size (blockwise8 4096, nf4/fp4 128); None keeps it.
    """

    def __init__(
        self,
        quantization_type: str = "nf4",
        min_numel: int = 1024,
        log_bytes: bool = True,
        block_size: Optional[int] = None,
    ):
        super().__init__(supported_data_kinds=_KINDS, data_kinds_to_filter=_KINDS)
        self.quantization_type = quantization_type
        self.min_numel = min_numel
        self.log_bytes = log_bytes
        self.block_size = block_size
        self._qtype = validate_qtype(quantization_type, owner=type(self).__name__)
        if isinstance(min_numel, bool) or not isinstance(min_numel, int) or min_numel < 0:
            raise ConfigError(f"min_numel for QuantizeFilter must be an int >= 0, got {min_numel!r}")
        if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int)
                                       or block_size <= 0 or block_size % 2):
            raise ConfigError(f"block_size for QuantizeFilter must be a positive even int or null, "
                              f"got {block_size!r}")

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> Optional[DXO]:
        if dxo.get_meta_prop(QUANT_META_KEY):
            self.log_debug(fl_ctx, "DXO already quantized; passing it on")
            return None
        data, tensors = {}, {}
        for name, value in dxo.data.items():
            if is_quantizable(value, self._qtype, self.min_numel):
                try:
                    data[name], tensors[name] = quantize(value, self._qtype, self.block_size)
                except ValueError as err:  # NaN/inf weights: fail closed, name the tensor
                    raise ValueError(f"{type(self).__name__}: cannot quantize {name!r}: {err}") from err
            else:
                data[name] = value
        out, before, after = encoded_dxo(dxo, data, QUANT_META_KEY,
                                         {"version": _FORMAT_VERSION, "qtype": self._qtype}, tensors)
        if self.log_bytes:
            self.log_info(fl_ctx, f"{round_label(shareable, fl_ctx)}: {self._qtype} quantized "
                                  f"{len(tensors)}/{len(data)} tensors, {format_change(before, after)}")
        return out


class DequantizeFilter(DXOFilter):
    """Restore a DXO quantized by :class:`QuantizeFilter` (exact dtypes and shapes); no config needed."""

    def __init__(self, log_bytes: bool = True):
        super().__init__(supported_data_kinds=_KINDS, data_kinds_to_filter=_KINDS)
        self.log_bytes = log_bytes

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> Optional[DXO]:
        info = dxo.get_meta_prop(QUANT_META_KEY)
        if not info:
            return None
        data = restore_listed(dxo, info, QUANT_META_KEY, _FORMAT_VERSION, dequantize, type(self).__name__, "quantized")
        meta = copy_meta(dxo, drop=QUANT_META_KEY)
        if self.log_bytes:
            change = format_change(payload_nbytes(dxo.data), payload_nbytes(data), ratio=False)
            self.log_info(fl_ctx, f"{round_label(shareable, fl_ctx)}: {info['qtype']} dequantized "
                                  f"{len(info['tensors'])}/{len(data)} tensors, {change}")
        return DXO(data_kind=dxo.data_kind, data=data, meta=meta)


def encoded_dxo(dxo: DXO, data: dict, meta_key: str, fields: dict, tensors: dict):
    """``(new DXO, bytes before, bytes after)``: ``data`` with ``fields``, the tensor byte counts and the
    per-tensor ``tensors`` meta under ``meta_key``. Shared by the filters that apply an encoding (quantize,
    sparsify); :func:`restore_listed` undoes it."""
    before, after = payload_nbytes(dxo.data), payload_nbytes(data)
    meta = copy_meta(dxo)
    meta[meta_key] = {**fields, "bytes_before": before, "bytes_after": after, "tensors": tensors}
    return DXO(data_kind=dxo.data_kind, data=data, meta=meta), before, after


def restore_listed(dxo: DXO, info: dict, meta_key: str, version: int, restore, owner: str, what: str) -> dict:
    """A copy of ``dxo.data`` with each tensor listed in ``info["tensors"]`` rebuilt by ``restore(data, meta)``.

    Shared by the filters that undo an encoding (dequantize, densify); fails on a format version it
    does not know or a listed tensor that is missing.
    """
    if info.get("version") != version:
        raise ValueError(f"{owner}: unsupported {meta_key} version {info.get('version')!r}")
    data = dict(dxo.data)
    for name, tensor_meta in info["tensors"].items():
        if name not in data:
            raise ValueError(f"{owner}: {what} tensor {name!r} is missing from the DXO data")
        data[name] = restore(data[name], tensor_meta)
    return data


def copy_meta(dxo: DXO, drop: Optional[str] = None) -> dict:
    """Shallow copy of the DXO meta for a new DXO; FLARE re-adds the filter history itself."""
    return {k: v for k, v in (dxo.meta or {}).items() if k not in (drop, MetaKey.FILTER_HISTORY)}


def round_label(shareable: Shareable, fl_ctx: FLContext) -> str:
    """'round 3 out' from the shareable header (or the context), for the byte log."""
    rnd = shareable.get_header(AppConstants.CURRENT_ROUND)
    if rnd is None:
        rnd = fl_ctx.get_prop(AppConstants.CURRENT_ROUND)
    direction = fl_ctx.get_prop(FLContextKey.FILTER_DIRECTION) or "?"
    return f"round {rnd if rnd is not None else '?'} {direction}"


def format_change(before: int, after: int, ratio: bool = True) -> str:
    """'88.10 MB -> 11.19 MB (12.7%)': tensor bytes, FOBS framing excluded."""
    text = f"{before / 1e6:.2f} MB -> {after / 1e6:.2f} MB"
    return f"{text} ({100.0 * after / before:.1f}%)" if ratio and before else text
