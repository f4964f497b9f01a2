"""FLARE DXO filters over :mod:`flaretune.ops`: quantization and top-k sparsification; and
:class:`AdapterOnlyGuard`, the site privacy filter the provisioning templates install; client-level DP
(:class:`GaussianPrivacyFilter`) and secure aggregation's site half (:class:`SecureAggregationFilter`).

Wire them task by task (FLARE 2.9 never matches ``tasks=["*"]``); :func:`filter_config` writes the
JSON for one side of a job.
"""

import importlib
from typing import List, Optional

# the filter classes import torch and nvflare: load them on first use, so writing a job config
# with filter_config() stays cheap
_LAZY = {"QuantizeFilter": "quantize", "DequantizeFilter": "quantize", "QUANT_META_KEY": "quantize",
         "TopKSparsifyFilter": "sparsify", "DensifyFilter": "sparsify", "SPARSE_META_KEY": "sparsify",
         "AdapterOnlyGuard": "guard", "GaussianPrivacyFilter": "dp", "DP_META_KEY": "dp",
         "SecureAggregationFilter": "secagg"}

__all__ = [
    "QuantizeFilter",
    "DequantizeFilter",
    "TopKSparsifyFilter",
    "DensifyFilter",
    "QUANT_META_KEY",
    "SPARSE_META_KEY",
    "AdapterOnlyGuard",
    "GaussianPrivacyFilter",
    "DP_META_KEY",
    "SecureAggregationFilter",
    "filter_config",
]

_PKG = "flaretune.filters"


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{_PKG}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def filter_config(side: str, tasks: List[str], quantization_type: Optional[str] = "nf4",
                  keep_fraction: Optional[float] = None) -> dict:
    """``task_data_filters`` / ``task_result_filters`` for ``config_fed_server.json`` or ``config_fed_client.json``.

    Data flows server -> client as task data and client -> server as results, so the sender
    quantizes and the receiver dequantizes in both directions. ``keep_fraction`` adds top-k
    sparsification of WEIGHT_DIFF results (client side) and densification (server side).
    """
    if side not in ("server", "client"):
        raise ValueError(f"side must be 'server' or 'client', got {side!r}")
    if not tasks or "*" in tasks:
        raise ValueError("name the tasks explicitly: FLARE 2.9 does not match tasks=['*']")
    quant = [{"path": f"{_PKG}.quantize.QuantizeFilter", "args": {"quantization_type": quantization_type}}]
    dequant = [{"path": f"{_PKG}.quantize.DequantizeFilter", "args": {}}]
    if not quantization_type:
        quant, dequant = [], []
    sparse = [{"path": f"{_PKG}.sparsify.TopKSparsifyFilter", "args": {"keep_fraction": keep_fraction}}]
    dense = [{"path": f"{_PKG}.sparsify.DensifyFilter", "args": {}}]
    if keep_fraction is None:
        sparse, dense = [], []
    if side == "server":  # task data out, results in
        data_filters, result_filters = quant, dequant + dense
    else:  # task data in, results out
        data_filters, result_filters = dequant, sparse + quant
    out = {}
    if data_filters:
        out["task_data_filters"] = [{"tasks": list(tasks), "filters": data_filters}]
    if result_filters:
        out["task_result_filters"] = [{"tasks": list(tasks), "filters": result_filters}]
    return out
