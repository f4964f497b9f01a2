"""Test-only executors that misbehave on purpose: a site that stalls in chosen rounds (a straggler, or a site
that is gone for the rest of the job), and a site that sends a bad result (NaN, a wrong shape, an inflated
example count). Importable by simulator workers through PYTHONPATH; never shipped."""

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import peft  # noqa: F401  the heavy imports at job start, not inside round 1's deadline
import transformers  # noqa: F401

from nvflare.apis.dxo import from_shareable
from nvflare.apis.fl_constant import ReturnCode
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from flaretune.executors.peft_train import PeftTrainExecutor
from flaretune.keys import NUM_EXAMPLES


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


class StragglerExecutor(StallingExecutor):
    """A straggler by pace, not by clock: before each ``train`` task a site named in ``stall`` waits until ``pace_site`` has
    received ``lag`` more tasks (lines in ``record_dir/<pace_site>.jsonl``), at most ``stall_seconds``. Under any
    machine load it is ``lag`` tasks behind that site (the asynchronous FedBuff tests)."""

    def __init__(self, pace_site: str = "site-1", lag: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.pace_site = pace_site
        self.lag = lag

    def _paced(self) -> int:
        path = Path(self.record_dir) / f"{self.pace_site}.jsonl"
        return len(path.read_text().splitlines()) if path.is_file() else 0

    def execute(self, task_name, shareable, fl_ctx, abort_signal):
        if task_name != self.train_task_name or fl_ctx.get_identity_name() not in self.stall:
            return super().execute(task_name, shareable, fl_ctx, abort_signal)  # recorded, never stalled
        site = fl_ctx.get_identity_name()
        with open(Path(self.record_dir) / f"{site}.jsonl", "a") as f:
            f.write(json.dumps({"round": shareable.get_header(AppConstants.CURRENT_ROUND), "stalled": True,
                                "sha256": params_sha256(FLModelUtils.from_shareable(shareable).params)}) + "\n")
        target = self._paced() + self.lag
        end = time.monotonic() + self.stall_seconds
        while self._paced() < target and time.monotonic() < end and not abort_signal.triggered:
            time.sleep(0.1)
        return PeftTrainExecutor.execute(self, task_name, shareable, fl_ctx, abort_signal)


BAD_RESULTS = ("nan", "shape", "count")
INFLATION = 1000  # a "count" result claims this many times the site's real example count


class BadResultExecutor(PeftTrainExecutor):
    """The real NER executor, except that ``faults[site][round]`` (one of :data:`BAD_RESULTS`, or "" for an
    honest round) spoils the site's ``train`` result after it trained: ``nan`` sets the first value of its first
    tensor (by name) to NaN, ``shape`` appends a copy of that tensor's first row, ``count`` multiplies the
    example count by :data:`INFLATION`. Every ``train`` result is recorded first: ``record_dir/<site>-<round>
    .safetensors`` holds the honest tensors and ``record_dir/<site>.jsonl`` the round, the fault, the example
    count the site really had and the one it sent."""

    def __init__(self, faults=None, record_dir: str = "", **kwargs):
        super().__init__(**kwargs)
        self.faults = faults or {}
        self.record_dir = record_dir

    def execute(self, task_name, shareable, fl_ctx, abort_signal):
        reply = super().execute(task_name, shareable, fl_ctx, abort_signal)
        if task_name != self.train_task_name or reply.get_return_code(ReturnCode.OK) != ReturnCode.OK:
            return reply
        from safetensors.numpy import save_file

        site = fl_ctx.get_identity_name()
        dxo = from_shareable(reply)  # edited in place: the reply keeps its metrics and headers
        round_number = reply.get_header(AppConstants.CURRENT_ROUND)
        plan = self.faults.get(site, [])
        fault = plan[round_number] if round_number < len(plan) else ""
        save_file({k: np.ascontiguousarray(v) for k, v in dxo.data.items()},
                  str(Path(self.record_dir) / f"{site}-{round_number}.safetensors"))
        real = dxo.meta[NUM_EXAMPLES]
        name = sorted(dxo.data)[0]
        tensor = np.array(dxo.data[name])
        if fault == "nan":
            tensor.flat[0] = np.nan
        elif fault == "shape":
            tensor = np.concatenate([tensor, tensor[:1]])
        elif fault == "count":
            dxo.meta[NUM_EXAMPLES] = real * INFLATION
        elif fault:
            raise ValueError(f"unknown fault {fault!r}; valid: {', '.join(BAD_RESULTS)}")
        dxo.data[name] = tensor
        with open(Path(self.record_dir) / f"{site}.jsonl", "a") as f:
            f.write(json.dumps({"round": round_number, "fault": fault, "num_examples": real,
                                "sent_num_examples": dxo.meta[NUM_EXAMPLES], "tensor": name}) + "\n")
        return dxo.update_shareable(reply)
