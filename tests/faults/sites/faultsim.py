"""Test-only executors that misbehave on purpose: a site that stalls in chosen rounds (a straggler, or a site
that is gone for the rest of the job). Importable by simulator workers through PYTHONPATH; never shipped."""

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import peft  # noqa: F401  the heavy imports at job start, not inside round 1's deadline
import transformers  # noqa: F401

from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from flaretune.executors.peft_train import PeftTrainExecutor


def params_sha256(params) -> str:
    digest = hashlib.sha256()
    for key in sorted(params):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(params[key], dtype=np.float32).tobytes())
    return digest.hexdigest()


class StallingExecutor(PeftTrainExecutor):
    """The real NER executor, except that ``stall[site]`` lists rounds in which the site sleeps ``stall_seconds``
    before it trains (it still answers afterwards, late). Every ``train`` task it receives is recorded in
    ``record_dir/<site>.jsonl``: the round, the sha256 of the global model it received, whether it stalled."""

    def __init__(self, stall=None, stall_seconds: float = 0.0, record_dir: str = "", **kwargs):
        super().__init__(**kwargs)
        self.stall = stall or {}
        self.stall_seconds = stall_seconds
        self.record_dir = record_dir

    def execute(self, task_name, shareable, fl_ctx, abort_signal):
        if task_name == self.train_task_name:
            site = fl_ctx.get_identity_name()
            round_number = shareable.get_header(AppConstants.CURRENT_ROUND)
            stalls = round_number in self.stall.get(site, [])
            if self.record_dir:
                record = {"round": round_number, "stalled": stalls,
                          "sha256": params_sha256(FLModelUtils.from_shareable(shareable).params)}
                with open(Path(self.record_dir) / f"{site}.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            end = time.monotonic() + (self.stall_seconds if stalls else 0)
            while time.monotonic() < end and not abort_signal.triggered:
                time.sleep(0.1)
        return super().execute(task_name, shareable, fl_ctx, abort_signal)
