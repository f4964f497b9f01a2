"""Client-level differential privacy on task results: clip the site's update, add Gaussian noise.

:class:`GaussianPrivacyFilter` is the site-side half of DP-FedAvg (McMahan et al., 2018,
arXiv:1710.06963): the update a site sends — its trained weights minus the global model it received —
is clipped to ``clip_norm`` by its global L2 norm over all tensors and gets N(0, (z·C)²) per
coordinate, from a generator seeded by the OS's CSPRNG. Each release is one Gaussian mechanism with
noise multiplier z on the site's whole data (``sample_rate=1`` for the accountant); noise summed over
n sites gives the aggregate σ = √n·z·C. The math is :mod:`flaretune.ops.dp`.

Where it goes: in ``task_result_filters`` of the training task — before any QuantizeFilter or
TopKSparsifyFilter (a site's ``privacy.json`` scope filters run before the job's own, so a site filter
always does). For WEIGHTS results the filter must also be in ``task_data_filters`` of the same task:
there it records the global model the site received in the task's FLContext (which FLARE keeps for
the whole task: data filters, executor, result filters), dequantizing it first if the server
quantized it. WEIGHT_DIFF results need no record.

It fails closed: a WEIGHTS result with no recorded global model, a tensor it cannot noise (integer,
NaN), a result already quantized or sparsified — each raises, FLARE answers the task with
``TASK_RESULT_FILTER_ERROR`` and sends no data. The DXO's training metrics (``initial_metrics``, scores
on the site's data, not covered by the noise) are dropped unless ``keep_metrics``.

DXO meta contract (key ``DP_META_KEY = "flaretune_dp"``)::

    {"version": 1, "mechanism": "gaussian", "noise_multiplier": z, "clip_norm": C}

The unclipped norm is never reported: it is a function of the site's data.
"""

from typing import Dict, Optional

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, MetaKey
from nvflare.apis.dxo_filter import DXOFilter
from nvflare.apis.fl_constant import FilterKey, FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

from flaretune import keys
from flaretune.errors import ConfigError
from flaretune.filters.quantize import QUANT_META_KEY, DequantizeFilter, copy_meta, round_label
from flaretune.filters.sparsify import SPARSE_META_KEY
from flaretune.ops.dp import add_gaussian_noise, check_dp_args, clip_by_global_norm

DP_META_KEY = "flaretune_dp"
_FORMAT_VERSION = 1
_KINDS = [DataKind.WEIGHTS, DataKind.WEIGHT_DIFF]


def _to_numpy(name: str, value) -> np.ndarray:
    """A float numpy view/copy of a torch tensor or numpy array; anything else cannot be noised."""
    if hasattr(value, "detach"):  # torch, imported only if the executor sent torch tensors
        value = value.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        value = value.numpy()
    if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
        raise ValueError(f"GaussianPrivacyFilter: cannot add noise to {name!r} "
                         f"({type(value).__name__} {getattr(value, 'dtype', '')}): only float tensors may leave")
    return value


def _like(value, reference):
    """``value`` (float64 numpy) as the container type and dtype of ``reference``."""
    if hasattr(reference, "detach"):
        import torch

        return torch.from_numpy(value).to(dtype=reference.dtype, device=reference.device)
    return value.astype(reference.dtype)


class GaussianPrivacyFilter(DXOFilter):
    """Clip each WEIGHTS / WEIGHT_DIFF update to ``clip_norm`` (global L2) and add N(0, (z·C)²) noise.

    Args:
        noise_multiplier: z, the noise std in units of ``clip_norm`` (> 0).
        clip_norm: C, the bound on the L2 norm of a site's whole update (> 0).
        keep_metrics: send the result's training metrics along (they are not noised); default False.
    """

    def __init__(self, noise_multiplier: float, clip_norm: float, keep_metrics: bool = False):
        super().__init__(supported_data_kinds=_KINDS, data_kinds_to_filter=_KINDS)
        self.noise_multiplier = noise_multiplier
        self.clip_norm = clip_norm
        self.keep_metrics = keep_metrics
        try:
            check_dp_args(noise_multiplier, clip_norm, type(self).__name__)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if not isinstance(keep_metrics, bool):
            raise ConfigError(f"keep_metrics for GaussianPrivacyFilter must be true or false, got {keep_metrics!r}")
        self._rng = None  # tests may set a seeded generator; None: a fresh CSPRNG-seeded one per result

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> Optional[DXO]:
        direction = fl_ctx.get_prop(FLContextKey.FILTER_DIRECTION)
        if direction == FilterKey.IN:
            self._record_received(dxo, shareable, fl_ctx)
            return None
        if direction != FilterKey.OUT:
            raise RuntimeError(f"{type(self).__name__}: unknown filter direction {direction!r}; refusing to pass data")
        return self._privatize(dxo, shareable, fl_ctx)

    # -- task data: remember the global model this task started from -----------------------------
    def _record_received(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> None:
        if dxo.data_kind != DataKind.WEIGHTS:
            return
        if dxo.get_meta_prop(QUANT_META_KEY):  # a site filter runs before the job's dequantizer
            dxo = DequantizeFilter(log_bytes=False).process_dxo(dxo, shareable, fl_ctx)
        received = {}
        for name, value in dxo.data.items():
            try:
                received[name] = np.array(_to_numpy(name, value), dtype=np.float64)
            except ValueError:
                continue  # an integer buffer: no update can be measured against it, and none may leave
        fl_ctx.set_prop(keys.DP_RECEIVED_MODEL, received, private=True, sticky=False)

    # -- task result: clip and noise the update ---------------------------------------------------
    def _privatize(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO:
        owner = type(self).__name__
        for key, what in ((QUANT_META_KEY, "QuantizeFilter"), (SPARSE_META_KEY, "TopKSparsifyFilter")):
            if dxo.get_meta_prop(key):
                raise ValueError(f"{owner}: the result was already encoded by {what}; list {owner} before it")
        values = {name: _to_numpy(name, v) for name, v in dxo.data.items()}
        base: Dict[str, np.ndarray] = {}
        if dxo.data_kind == DataKind.WEIGHTS:
            received = fl_ctx.get_prop(keys.DP_RECEIVED_MODEL)
            if received is None:
                raise ValueError(f"{owner}: no received global model recorded for this WEIGHTS result; add "
                                 f"{owner} to the task's task_data_filters too (or send WEIGHT_DIFF)")
            missing = sorted(n for n in values if received.get(n) is None or received[n].shape != values[n].shape)
            if missing:
                raise ValueError(f"{owner}: {len(missing)} result tensors have no matching received tensor "
                                 f"(e.g. {missing[0]!r}); cannot measure the update")
            base = {n: received[n] for n in values}
        update = {n: v.astype(np.float64) - base[n] if base else v for n, v in values.items()}
        clipped, _ = clip_by_global_norm(update, float(self.clip_norm))
        noised = add_gaussian_noise(clipped, float(self.noise_multiplier) * float(self.clip_norm), self._rng)
        data = {n: _like(noised[n] + base[n] if base else noised[n], dxo.data[n]) for n in values}
        meta = copy_meta(dxo, drop=None if self.keep_metrics else MetaKey.INITIAL_METRICS)
        meta[DP_META_KEY] = {"version": _FORMAT_VERSION, "mechanism": "gaussian",
                             "noise_multiplier": float(self.noise_multiplier), "clip_norm": float(self.clip_norm)}
        std = self.noise_multiplier * self.clip_norm
        self.log_info(fl_ctx, f"{round_label(shareable, fl_ctx)}: {owner} clipped the update to L2 norm "
                              f"{self.clip_norm:g} and added Gaussian noise (std {std:g}) to {len(data)} tensors")
        return DXO(data_kind=dxo.data_kind, data=data, meta=meta)
