"""FLARE controller: FedAvg / FedProx / FedOpt rounds over adapter tensors.

The workflow is FedAvg's (McMahan et al., 2017); which server step runs is a string name (see
:mod:`flaretune.aggregation.ops`), so a job picks ``"aggregator": "fedadam"`` in JSON.
"""

import json
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.workflows.model_controller import ModelController

from flaretune.aggregation.ops import apply_diffs, make_server_optimizer, weighted_mean
from flaretune.aggregation.persistor import FINAL_META_KEY, GLOBAL_MODEL_DIR, ROUND_META_KEY, SPEC_META_KEY
from flaretune.errors import ConfigError

NUM_EXAMPLES_KEY = "num_examples"
FEDPROX_MU_KEY = "fedprox_mu"
HISTORY_FILE = "history.json"


class FedAggController(ModelController):
    """Rounds of train → aggregate → persist, then one ``validate`` of the final model on every site.

    Each result is weighted by the site's training example count (``meta["num_examples"]``).
    Results may carry full weights or weight differences (``ParamsType.DIFF``).
    """

    def __init__(
        self,
        num_rounds: int = 5,
        aggregator: str = "fedavg",
        server_lr: float = 1.0,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        fedprox_mu: float = 0.0,
        min_clients: int = 0,
        train_task_name: str = "train",
        validate_task_name: str = "validate",
        final_validation: bool = True,
        train_timeout: int = 0,
        persistor_id: str = "persistor",
    ):
        super().__init__(persistor_id=persistor_id)
        self.num_rounds = num_rounds
        self.aggregator = aggregator
        self.server_lr = server_lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.tau = tau
        self.fedprox_mu = fedprox_mu
        self.min_clients = min_clients
        self.train_task_name = train_task_name
        self.validate_task_name = validate_task_name
        self.final_validation = final_validation
        self.train_timeout = train_timeout
        if num_rounds < 1:
            raise ConfigError(f"num_rounds must be >= 1, got {num_rounds}")
        if fedprox_mu < 0:
            raise ConfigError(f"fedprox_mu must be >= 0, got {fedprox_mu}")
        if aggregator == "fedprox" and fedprox_mu == 0:
            raise ConfigError("aggregator 'fedprox' needs fedprox_mu > 0 (e.g. 0.01)")
        # validates the name and arguments at job start
        self._optimizer = make_server_optimizer(aggregator, server_lr=server_lr, beta1=beta1, beta2=beta2, tau=tau)

    def _history_path(self) -> Path:
        folder = Path(self.get_run_dir()) / GLOBAL_MODEL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return folder / HISTORY_FILE

    def run(self):
        model = self.load_model()
        if model is None:
            return
        base_meta = dict(model.meta or {})
        if SPEC_META_KEY not in base_meta:
            self.panic("the persistor must be a flaretune PeftAdapterPersistor (no model spec in its meta)")
            return
        global_params = {k: np.asarray(v) for k, v in model.params.items()}
        history: Dict[str, object] = {"aggregator": self.aggregator, "rounds": [], "final": None}
        min_responses = self.min_clients or None
        for round_number in range(self.num_rounds):
            if self.abort_signal.triggered:
                self.info("abort requested: stopping before round %d" % round_number)
                return
            started = time.time()
            self.info(f"round {round_number + 1}/{self.num_rounds}: sending the global adapter")
            task_model = FLModel(
                params_type=ParamsType.FULL,
                params=global_params,
                current_round=round_number,
                total_rounds=self.num_rounds,
                meta={**base_meta, FEDPROX_MU_KEY: self.fedprox_mu},
            )
            results = self.send_model_and_wait(
                task_name=self.train_task_name, data=task_model, min_responses=min_responses, timeout=self.train_timeout
            )
            if not results:
                self.panic(f"round {round_number}: no client returned a result")
                return
            global_params = self._aggregate(global_params, results)
            record = {
                "round": round_number,
                "seconds": round(time.time() - started, 2),
                "clients": {self._client_name(r): self._client_record(r) for r in results},
            }
            history["rounds"].append(record)
            self.info(
                f"round {round_number + 1}/{self.num_rounds} done in {record['seconds']:.0f}s; "
                f"after local training: {self._summary(record)}"
            )
            self._save(global_params, base_meta, round_number, final=round_number == self.num_rounds - 1)
            self._history_path().write_text(json.dumps(history, indent=2))

        if self.final_validation and not self.abort_signal.triggered:
            final_model = FLModel(params_type=ParamsType.FULL, params=global_params, meta=dict(base_meta))
            results = self.send_model_and_wait(task_name=self.validate_task_name, data=final_model)
            history["final"] = {self._client_name(r): r.metrics or {} for r in results}
            self.info(f"final global model on each site's test split: {self._summary({'clients': history['final']})}")
            self._history_path().write_text(json.dumps(history, indent=2))

    def _aggregate(self, global_params, results: List[FLModel]):
        updates = []
        for result in results:
            weight = float((result.meta or {}).get(NUM_EXAMPLES_KEY, 1))
            params = {k: np.asarray(v, dtype=np.float32) for k, v in result.params.items()}
            updates.append((params, weight, result.params_type))
        diffs = [(p, w) for p, w, kind in updates if kind == ParamsType.DIFF]
        fulls = [(p, w) for p, w, kind in updates if kind != ParamsType.DIFF]
        if diffs and fulls:
            raise ConfigError("clients mixed full weights and weight differences in one round; set send_diff alike")
        mean = apply_diffs(global_params, diffs) if diffs else weighted_mean(fulls)
        return self._optimizer.step(global_params, mean)

    def _save(self, params, base_meta, round_number: int, final: bool):
        meta = {**base_meta, ROUND_META_KEY: round_number, FINAL_META_KEY: final}
        self.save_model(FLModel(params_type=ParamsType.FULL, params=params, meta=meta))

    @staticmethod
    def _client_name(result: FLModel) -> str:
        return str((result.meta or {}).get("client_name", "unknown"))

    @staticmethod
    def _client_record(result: FLModel) -> dict:
        meta = result.meta or {}
        return {
            NUM_EXAMPLES_KEY: meta.get(NUM_EXAMPLES_KEY),
            "metrics": result.metrics or {},
            "upload_param_bytes": meta.get("upload_param_bytes"),
        }

    @staticmethod
    def _summary(record, keys=("local_f1", "local_accuracy", "f1", "accuracy")) -> str:
        """``site-1 f1 0.912, site-2 f1 0.874``: each site's headline score on its own test split."""
        parts = []
        for name, value in sorted(record["clients"].items()):
            metrics = value.get("metrics", value)
            key = next((k for k in keys if isinstance(metrics.get(k), (int, float))), None)
            parts.append(f"{name} {key.split('_')[-1]} {metrics[key]:.3f}" if key else name)
        return ", ".join(parts)
