"""Top-k sparsification of WEIGHT_DIFF results with error feedback, and the matching densifier.

Thin glue over :mod:`flaretune.ops.sparsify` (see there for the method and its citations).
``TopKSparsifyFilter`` goes in the CLIENT's task result filters; it keeps each tensor's residual
(the part not sent) in the filter instance, keyed by tensor name, and adds it to the next round's
diff before selecting - so the residual never leaves the client. ``DensifyFilter`` goes in the
SERVER's task result filters and rebuilds dense diffs before aggregation.

DXO meta contract (key ``SPARSE_META_KEY = "flaretune_sparsify"``)::

    {"version": 1, "keep_fraction": float, "bytes_before": int, "bytes_after": int,
     "tensors": {name: {"dtype", "shape", "numpy", "k"}}}

Each listed ``data[name]`` is ``{"indices": int32 array, "values": array}``; other entries are
dense and untouched. Combined with :class:`~flaretune.filters.quantize.QuantizeFilter` after it,
the sparse entries pass through the quantizer unchanged (only dense tensors are quantized).
"""

import threading
from typing import Dict, Optional

import torch

from nvflare.apis.dxo import DXO, DataKind
from nvflare.apis.dxo_filter import DXOFilter
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

from flaretune.errors import ConfigError
from flaretune.filters.quantize import copy_meta, encoded_dxo, format_change, restore_listed, round_label
from flaretune.ops.sparsify import densify, is_sparsifiable, topk_sparsify

SPARSE_META_KEY = "flaretune_sparsify"
_FORMAT_VERSION = 1
_KINDS = [DataKind.WEIGHT_DIFF]


class TopKSparsifyFilter(DXOFilter):
    """Send only the largest ``keep_fraction`` of each WEIGHT_DIFF tensor; keep the rest for later.

    Args:
        keep_fraction: fraction of entries sent per tensor, in (0, 1].
        min_numel: tensors with fewer elements are sent dense.
        error_feedback: add the residual of earlier rounds before selecting (recommended).
        log_bytes: log tensor bytes before/after for each round.
    """

    def __init__(self, keep_fraction: float = 0.1, min_numel: int = 1024, error_feedback: bool = True,
                 log_bytes: bool = True):
        super().__init__(supported_data_kinds=_KINDS, data_kinds_to_filter=_KINDS)
        self.keep_fraction = keep_fraction
        self.min_numel = min_numel
        self.error_feedback = error_feedback
        self.log_bytes = log_bytes
        if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, (int, float)) or not 0 < keep_fraction <= 1:
            raise ConfigError(f"keep_fraction for TopKSparsifyFilter must be in (0, 1], got {keep_fraction!r}")
        if isinstance(min_numel, bool) or not isinstance(min_numel, int) or min_numel < 0:
            raise ConfigError(f"min_numel for TopKSparsifyFilter must be an int >= 0, got {min_numel!r}")
        self._residuals: Dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> Optional[DXO]:
        if dxo.get_meta_prop(SPARSE_META_KEY):
            return None
        data, tensors = {}, {}
        with self._lock:
            for name, value in dxo.data.items():
                if not is_sparsifiable(value, self.min_numel):
                    data[name] = value
                    continue
                residual = self._residuals.get(name) if self.error_feedback else None
                numel = value.numel() if isinstance(value, torch.Tensor) else value.size
                if residual is not None and residual.numel() != numel:
                    self.log_warning(fl_ctx, f"{name!r} changed size; dropping its residual")
                    residual = None
                data[name], tensors[name], new_residual = topk_sparsify(value, float(self.keep_fraction), residual)
                if self.error_feedback:
                    self._residuals[name] = new_residual
        out, before, after = encoded_dxo(dxo, data, SPARSE_META_KEY,
                                         {"version": _FORMAT_VERSION, "keep_fraction": float(self.keep_fraction)},
                                         tensors)
        if self.log_bytes:
            self.log_info(fl_ctx, f"{round_label(shareable, fl_ctx)}: top-{self.keep_fraction:g} sparsified "
                                  f"{len(tensors)}/{len(data)} tensors, {format_change(before, after)}")
        return out

    def residual_norm(self) -> float:
        """L2 norm of everything held back so far (for logging and tests)."""
        with self._lock:
            return float(sum(r.double().pow(2).sum() for r in self._residuals.values()) ** 0.5)


class DensifyFilter(DXOFilter):
    """Rebuild dense WEIGHT_DIFF tensors from :class:`TopKSparsifyFilter` output; no config needed."""

    def __init__(self):
        super().__init__(supported_data_kinds=_KINDS, data_kinds_to_filter=_KINDS)

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> Optional[DXO]:
        info = dxo.get_meta_prop(SPARSE_META_KEY)
        if not info:
            return None
        data = restore_listed(dxo, info, SPARSE_META_KEY, _FORMAT_VERSION, densify, type(self).__name__, "sparse")
        return DXO(data_kind=dxo.data_kind, data=data, meta=copy_meta(dxo, drop=SPARSE_META_KEY))
