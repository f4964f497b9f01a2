"""FLARE's default tensor path, for comparison in ``flaretune bench stream``.

The server holds a state dict of torch tensors in memory and sends it as an ``FLModel`` with
``ModelController.send_model_and_wait`` (what a FedAvg round does, TensorDecomposer and all); each site
hashes what it received and answers with the digest only, so only the server -> site direction is timed.
"""

import hashlib
import json
import time
from pathlib import Path

from nvflare.apis.executor import Executor
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import ReturnCode, Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils
from nvflare.app_common.workflows.model_controller import ModelController

from flaretune.errors import ConfigError

MiB = 1 << 20


def _register_tensor_decomposer():
    from nvflare.app_opt.pt.decomposers import TensorDecomposer
    from nvflare.fuel.utils import fobs

    fobs.register(TensorDecomposer)


def state_dict_sha256(params: dict) -> str:
    """sha256 over the raw bytes of every tensor, in name order (no copies: numpy views of the tensors)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(params):
        t = params[name]
        t = t if isinstance(t, torch.Tensor) else torch.as_tensor(t)
        h.update(t.detach().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


class TensorPushBaseline(ModelController):
    def __init__(self, size_mb: float, tensor_mb: float = 64, task_name: str = "baseline_push", report_path: str = ""):
        """Send a random ``size_mb`` state dict (bf16 tensors of ``tensor_mb``) to all sites once, timed.

        Args:
            size_mb: model size in MiB.
            tensor_mb: size of each tensor in MiB.
            task_name: task the sites' ``TensorReceiverBaseline`` handles.
            report_path: if set, a JSON summary (bytes, seconds, digests) is written there.
        """
        super().__init__(persistor_id="")
        if not isinstance(size_mb, (int, float)) or size_mb <= 0:
            raise ConfigError(f"size_mb must be > 0, got {size_mb!r}")
        self.size_mb = size_mb
        self.tensor_mb = tensor_mb
        self.task_name = task_name
        self.report_path = report_path

    def run(self):
        import torch

        _register_tensor_decomposer()
        total = max(2, int(self.size_mb * MiB) // 2 * 2)
        per = max(2, int(self.tensor_mb * MiB) // 2 * 2)
        params, left, k = {}, total, 0
        while left > 0:
            n = min(per, left)
            params[f"layers.{k}.weight"] = torch.empty(n // 2, dtype=torch.bfloat16).uniform_(-1, 1)
            left -= n
            k += 1
        expected = state_dict_sha256(params)
        self.info(f"baseline: sending {total} bytes as {len(params)} tensors through the default tensor path")
        started = time.time()
        results = self.send_model_and_wait(
            task_name=self.task_name, data=FLModel(params=params, params_type=ParamsType.FULL)
        )
        seconds = time.time() - started
        sites = {r.meta.get("client_name", f"site{i}"): (r.metrics or {}).get("sha256") for i, r in enumerate(results)}
        report = {
            "ok": bool(results) and all(d == expected for d in sites.values()),
            "total_bytes": total,
            "seconds": seconds,
            "expected_sha256": expected,
            "sites": sites,
        }
        self.info(f"baseline: done in {seconds:.1f}s, digests match: {report['ok']}")
        if self.report_path:
            Path(self.report_path).write_text(json.dumps(report, indent=1))


class TensorReceiverBaseline(Executor):
    def __init__(self, task_name: str = "baseline_push"):
        """Receive the baseline state dict and answer with its sha256 only."""
        super().__init__()
        self.task_name = task_name
        _register_tensor_decomposer()

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        if task_name != self.task_name:
            return make_reply(ReturnCode.TASK_UNKNOWN)
        model = FLModelUtils.from_shareable(shareable)
        digest = state_dict_sha256(model.params)
        del model, shareable
        return FLModelUtils.to_shareable(FLModel(metrics={"sha256": digest}))
