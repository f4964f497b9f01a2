"""Test-only site filter for the secure-aggregation simulator tests (imported by the FLARE site processes:
the tests put this folder on PYTHONPATH and allow ``secagg_testkit.`` in the workspace's class_allow_list).

It records each site's true update and the masked view the server receives, and can make a site drop out
after it masked its update (the masked result never leaves) — an injection that production code lacks."""

import json
from pathlib import Path

import numpy as np
from nvflare.apis.dxo import from_shareable
from nvflare.apis.fl_constant import FilterKey, FLContextKey

from flaretune import keys
from flaretune.filters.secagg import SecureAggregationFilter


class RecordingSecAggFilter(SecureAggregationFilter):
    def __init__(self, record_dir: str = "", drop_sites=(), **kwargs):
        super().__init__(**kwargs)
        self.record_dir = record_dir
        self.drop_sites = list(drop_sites)

    def process(self, shareable, fl_ctx):
        task = fl_ctx.get_prop(FLContextKey.TASK_NAME)
        outgoing = fl_ctx.get_prop(FLContextKey.FILTER_DIRECTION) == FilterKey.OUT and task == "train"
        site = fl_ctx.get_identity_name()
        true = from_shareable(shareable) if outgoing else None
        true_data = {k: np.asarray(v, dtype=np.float64) for k, v in true.data.items()} if true else None
        out = super().process(shareable, fl_ctx)
        if outgoing:
            masked = from_shareable(out)
            folder = Path(self.record_dir)
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / f"{site}-true.npz", **true_data)
            np.savez(folder / f"{site}-masked.npz", **{k: np.asarray(v) for k, v in masked.data.items()})
            (folder / f"{site}.json").write_text(json.dumps({"num_examples": true.get_meta_prop(keys.NUM_EXAMPLES),
                                                             "masked_meta_keys": sorted(masked.meta)}))
            if site in self.drop_sites:
                raise ValueError(f"test: {site} drops out after masking its update")
        return out
