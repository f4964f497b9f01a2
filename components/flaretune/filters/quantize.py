"""FLARE DXO filters that quantize model weights/diffs for transfer and restore them on arrival.

Thin glue over :mod:`flaretune.ops.quant` and :mod:`flaretune.ops.pack`. Unlike NVFlare's
``ModelQuantizer`` (which calls ``.cuda()`` for blockwise8/float4/normfloat4), these run on CPU and
keep tensors on their device.

DXO meta contract (key ``QUANT_META_KEY = "flaretune_quantization"``)::

    {"version": 2, "qtype": "nf4", "bytes_before": int, "bytes_after": int,
     ["tensors": {name: {"qtype", "dtype", "shape", "numpy", ["block", "lo", "step"]}}],
     "packs": [{"index", ["block", "lo", "step"]}]}

Tensors under ``pack_numel`` elements travel packed: per container and device, all of them in one
uint8 array ``data["flaretune_pack.<i>"]`` described by ``packs[i]`` (layout and index in
:mod:`flaretune.ops.pack`): quantized if ``is_quantizable``, else bit for bit. Each
tensor listed under ``"tensors"`` is quantized alone (``data[name]`` is one uint8 or 16-bit array);
every other entry of ``dxo.data`` passes through unchanged. A message without packs is written
as version 1 (no ``"packs"``), the format of earlier flaretune releases, which this dequantizer
still reads. The dequantizer needs no configuration: it reads this key, restores the listed and
packed tensors (packed ones after the other entries) and removes the key. A DXO without the key
is left untouched, and a DXO that already carries it is not quantized twice.

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
from flaretune.ops.pack import PackError, group_key, numel, pack, packable, unpack
from flaretune.ops.quant import dequantize, is_quantizable, payload_nbytes, quantize, validate_qtype

QUANT_META_KEY = "flaretune_quantization"
PACK_KEY = "flaretune_pack."
_FORMAT_VERSION = 2  # 1: no packs
_KINDS = [DataKind.WEIGHTS, DataKind.WEIGHT_DIFF]


class QuantizeFilter(DXOFilter):
    """Quantize WEIGHTS / WEIGHT_DIFF DXOs (torch tensors or numpy arrays) before they are sent.

    Args:
        quantization_type: one of ``float16``, ``bfloat16``, ``blockwise8``, ``nf4``, ``fp4``, ``entropy``
            (NVFlare's ``normfloat4``/``float4`` are accepted as aliases).
        min_numel: tensors with fewer elements (biases, norms) pass through unquantized.
        log_bytes: log tensor bytes before/after for each round.
        block_size: override the type's block size (blockwise8 4096, nf4/fp4 128); None keeps it
            (``entropy`` has no blocks and ignores it).
        pack_numel: tensors with fewer elements travel packed, one array per container and device
            (FOBS frames each array with ~200-280 B, a LoRA matrix is 3-20 KB quantized); larger
            ones keep their own array, where framing is under 0.05% and one array per message would
            only grow towards msgpack's 4 GiB limit. 0 packs nothing (the version-1 format).
    """

    def __init__(
        self,
        quantization_type: str = "nf4",
        min_numel: int = 1024,
        log_bytes: bool = True,
        block_size: Optional[int] = None,
        pack_numel: int = 1 << 20,
    ):
        super().__init__(supported_data_kinds=_KINDS, data_kinds_to_filter=_KINDS)
        self.quantization_type = quantization_type
        self.min_numel = min_numel
        self.log_bytes = log_bytes
        self.block_size = block_size
        self.pack_numel = pack_numel
        self._qtype = validate_qtype(quantization_type, owner=type(self).__name__)
        if isinstance(min_numel, bool) or not isinstance(min_numel, int) or min_numel < 0:
            raise ConfigError(f"min_numel for QuantizeFilter must be an int >= 0, got {min_numel!r}")
        if isinstance(pack_numel, bool) or not isinstance(pack_numel, int) or pack_numel < 0:
            raise ConfigError(f"pack_numel for QuantizeFilter must be an int >= 0, got {pack_numel!r}")
        if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int)
                                       or block_size <= 0 or block_size % 2):
            raise ConfigError(f"block_size for QuantizeFilter must be a positive even int or null, "
                              f"got {block_size!r}")

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> Optional[DXO]:
        if dxo.get_meta_prop(QUANT_META_KEY):
            self.log_debug(fl_ctx, "DXO already quantized; passing it on")
            return None
        groups = self._pack_groups(dxo.data)
        packed = {name for names in groups for name in names}
        data, tensors, packs = {}, {}, []
        for name, value in dxo.data.items():
            if name in packed:
                continue
            if is_quantizable(value, self._qtype, self.min_numel):
                try:
                    data[name], tensors[name] = quantize(value, self._qtype, self.block_size)
                except ValueError as err:  # NaN/inf weights: fail closed, name the tensor
                    raise ValueError(f"{type(self).__name__}: cannot quantize {name!r}: {err}") from err
            else:
                data[name] = value
        for i, names in enumerate(groups):
            key = f"{PACK_KEY}{i}"
            if key in dxo.data:
                raise ValueError(f"{type(self).__name__}: the DXO has an entry {key!r}, a name reserved for packed "
                                 f"tensors; rename it or set pack_numel to 0")
            try:
                data[key], pack_meta = pack({n: dxo.data[n] for n in names}, self._qtype, self.block_size,
                                            self.min_numel)
            except ValueError as err:  # NaN/inf weights: fail closed, name the tensor
                raise ValueError(f"{type(self).__name__}: {err}") from err
            packs.append(pack_meta)
        fields = {"version": _FORMAT_VERSION, "qtype": self._qtype, "packs": packs} if packs else {
            "version": 1, "qtype": self._qtype}
        out, before, after = encoded_dxo(dxo, data, QUANT_META_KEY, fields, tensors)
        if packs and not tensors:  # 9 bytes: an adapter message is ~0.3% over its codes, all framing
            del out.meta[QUANT_META_KEY]["tensors"]
        if self.log_bytes:
            n_quantized = len(tensors) + sum(is_quantizable(dxo.data[n], self._qtype, self.min_numel)
                                             for n in packed)
            how = f" ({len(packed)} packed into {len(packs)} array{'s' * (len(packs) > 1)})" if packs else ""
            self.log_info(fl_ctx, f"{round_label(shareable, fl_ctx)}: {self._qtype} quantized "
                                  f"{n_quantized}/{len(dxo.data)} tensors{how}, {format_change(before, after)}")
        return out

    def _pack_groups(self, data: dict) -> list:
        """Names to pack, one list per container and device with at least two tensors (one gains nothing)."""
        if not self.pack_numel:
            return []
        groups = {}
        for name, value in data.items():
            if packable(value) and numel(value) < self.pack_numel:
                groups.setdefault(group_key(value), []).append(name)
        return [names for names in groups.values() if len(names) > 1]


class DequantizeFilter(DXOFilter):
    """Restore a DXO quantized by :class:`QuantizeFilter` (exact dtypes and shapes); no config needed."""

    def __init__(self, log_bytes: bool = True):
        super().__init__(supported_data_kinds=_KINDS, data_kinds_to_filter=_KINDS)
        self.log_bytes = log_bytes

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> Optional[DXO]:
        info = dxo.get_meta_prop(QUANT_META_KEY)
        if not info:
            return None
        owner = type(self).__name__
        version = info.get("version")
        if version not in (1, _FORMAT_VERSION):
            raise ValueError(f"{owner}: unsupported {QUANT_META_KEY} version {version!r}")
        data = restore_listed(dxo, info, QUANT_META_KEY, version, dequantize, owner, "quantized")
        packs = info.get("packs", []) if version > 1 else []
        if not isinstance(packs, list):
            raise ValueError(f"{owner}: {QUANT_META_KEY} field 'packs' must be a list, got {type(packs).__name__}")
        n_packed = 0
        for i, pack_meta in enumerate(packs):
            key = f"{PACK_KEY}{i}"
            if key not in data:
                raise ValueError(f"{owner}: packed tensors {key!r} are missing from the DXO data")
            try:
                restored = unpack(data.pop(key), pack_meta, info["qtype"])
            except PackError as err:
                raise ValueError(f"{owner}: packed tensors {key!r}: {err}") from None
            clash = [name for name in restored if name in data]
            if clash:
                raise ValueError(f"{owner}: packed tensors {key!r}: field 'names' holds {clash[0]!r}, which the "
                                 f"DXO also carries")
            data.update(restored)
            n_packed += len(restored)
        meta = copy_meta(dxo, drop=QUANT_META_KEY)
        if self.log_bytes:
            change = format_change(payload_nbytes(dxo.data), payload_nbytes(data), ratio=False)
            self.log_info(fl_ctx, f"{round_label(shareable, fl_ctx)}: {info['qtype']} dequantized "
                                  f"{len(info.get('tensors', {})) + n_packed}/{len(data)} tensors, {change}")
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
    does not know or a listed tensor that is missing. No ``"tensors"`` lists none.
    """
    if info.get("version") != version:
        raise ValueError(f"{owner}: unsupported {meta_key} version {info.get('version')!r}")
    data = dict(dxo.data)
    for name, tensor_meta in info.get("tensors", {}).items():
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
