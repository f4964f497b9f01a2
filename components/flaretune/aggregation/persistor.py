"""Server-side store of the global adapter: initial weights, one file per round, the final PEFT folder."""

import json
import os
from pathlib import Path
from typing import List, Optional

import numpy as np

from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model import ModelLearnable, make_model_learnable
from nvflare.app_common.abstract.model_persistor import ModelPersistor

from flaretune import keys
from flaretune.models.lora import PeftSpec

GLOBAL_MODEL_DIR = "global_model"
ADAPTER_DIR = "adapter"


def round_file(folder: Path, round_number: int) -> Path:
    return folder / f"round-{round_number:03d}.safetensors"


class PeftAdapterPersistor(ModelPersistor):
    """Owns the :class:`PeftSpec` of a job and persists the aggregated adapter.

    Writes ``<run dir>/global_model/round-NNN.safetensors`` every round and, when the controller marks
    the model final, ``<run dir>/global_model/adapter/`` — an HF PEFT adapter folder.
    """

    def __init__(
        self,
        model_name: str = "minilm-ner",
        labels: Optional[List[str]] = None,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.1,
        target_modules: Optional[List[str]] = None,
        seed: int = 0,
        output_dir: str = "",
        task: Optional[dict] = None,
        method: str = "lora",
        layers=None,
        method_args: Optional[dict] = None,
    ):
        """``task``: how the final model is prompted and scored (e.g. ``system_prompt``, ``label_words``,
        ``max_length``), written into the adapter folder for ``flaretune predict`` / ``chat``.

        ``method``, ``layers``, ``method_args``: the job's client method (:mod:`flaretune.train.methods`); it
        decides which tensors form the global model, and travels to the sites in the spec."""
        super().__init__()
        self.model_name = model_name
        self.labels = labels
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.target_modules = target_modules
        self.seed = seed
        self.output_dir = output_dir
        self.task = task
        self.method = method
        self.layers = layers
        self.method_args = method_args
        self.spec = PeftSpec(
            model_name=model_name,
            labels=labels,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=target_modules or ["query", "value"],
            seed=seed,
            method=method,
            layers=layers,
            method_args=method_args,
        )

    def _folder(self, fl_ctx: FLContext) -> Path:
        if self.output_dir:
            folder = Path(self.output_dir)
        else:
            workspace = fl_ctx.get_engine().get_workspace()
            folder = Path(workspace.get_run_dir(fl_ctx.get_job_id())) / GLOBAL_MODEL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def load_model(self, fl_ctx: FLContext) -> ModelLearnable:
        from flaretune.train.methods import server_method

        method = server_method(self.spec)
        model = method.build()
        weights = {k: v.numpy() for k, v in method.get_params(model).items()}
        n_trainable = sum(v.size for v in weights.values())
        n_total = sum(p.numel() for p in model.parameters())
        self.log_info(
            fl_ctx,
            f"initial adapter for {self.model_name}: {len(weights)} tensors, {n_trainable:,} trainable of "
            f"{n_total:,} parameters ({100.0 * n_trainable / n_total:.2f}%)",
        )
        return make_model_learnable(weights, {keys.MODEL_SPEC: self.spec.to_dict(), "full_model_params": n_total})

    def save_model(self, model_learnable: ModelLearnable, fl_ctx: FLContext):
        from safetensors.numpy import save_file

        folder = self._folder(fl_ctx)
        weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in model_learnable["weights"].items()}
        meta = model_learnable.get("meta") or {}
        round_number = int(meta.get(keys.ROUND, 0))
        target = round_file(folder, round_number)
        tmp = target.with_suffix(".tmp")
        save_file(weights, str(tmp))
        os.replace(tmp, target)
        self.log_info(fl_ctx, f"saved global adapter of round {round_number} to {target}")
        if meta.get(keys.FINAL):
            from flaretune.models.lora import save_adapter_folder

            out = save_adapter_folder(self.spec, weights, folder / ADAPTER_DIR, task=self.task)
            (folder / "spec.json").write_text(json.dumps(self.spec.to_dict(), indent=2))
            self.log_info(fl_ctx, f"wrote PEFT adapter folder {out}")
