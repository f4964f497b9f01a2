"""FLARE controller: FedAvg / FedProx / FedOpt rounds over adapter tensors held in memory.

The round loop is :func:`flaretune.aggregation.rounds.run_rounds`, shared with the streamed full-model
workflow; which server step runs is a string name (:mod:`flaretune.aggregation.strategy`), so a job picks
``"aggregator": "fedadam"`` in JSON. Every result is validated before it is aggregated, and the server
checkpoints after every round (``checkpoint/`` in the run folder); ``resume_from`` continues a job from
such a folder.
"""

from pathlib import Path
from typing import Dict, List

import numpy as np

from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.workflows.model_controller import ModelController

from flaretune import keys
from flaretune.aggregation.checkpoint import CHECKPOINT_DIR, Checkpoint, resume_point, snapshot_folder
from flaretune.aggregation.persistor import GLOBAL_MODEL_DIR, round_file
from flaretune.aggregation.rounds import (
    HISTORY_FILE, MemoryStore, RoundDriver, RoundSettings, SiteResult, run_rounds, summary, write_history,
)
from flaretune.aggregation.strategy import make_strategy, strategy_kwargs
from flaretune.aggregation.validation import ValidationPolicy
from flaretune.errors import ConfigError, FlaretuneError


class FedAggController(ModelController, RoundDriver):
    """Rounds of train → validate → aggregate → persist → checkpoint, then one ``validate`` of the final model.

    Each result is weighted by the site's training example count (``meta["num_examples"]``). Results may
    carry full weights or weight differences (``ParamsType.DIFF``).
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
        max_num_examples: float = 1_000_000,
        norm_outlier_factor: float = 10.0,
        seed: int = 0,
        resume_from: str = "",
    ):
        """
        Args:
            num_rounds: rounds in total (a resumed job counts the rounds it already completed).
            aggregator: fedavg, fedprox, fedavgm, fedadagrad, fedadam or fedyogi; server_lr, beta1, beta2,
                tau go to the FedOpt ones, fedprox_mu to fedprox (and to every site as its proximal weight).
            min_clients: accepted results a round needs (0: one); 0 also means every site must answer.
            max_num_examples / norm_outlier_factor: result validation (see flaretune.aggregation.validation).
            seed: seed of the client-sampling RNG (checkpointed with the rest).
            resume_from: a ``checkpoint`` folder of an earlier run of this job (absolute, or relative to the
                server's workspace root); the job continues after its last completed round.
        """
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
        self.max_num_examples = max_num_examples
        self.norm_outlier_factor = norm_outlier_factor
        self.seed = seed
        self.resume_from = resume_from
        if num_rounds < 1:
            raise ConfigError(f"num_rounds must be >= 1, got {num_rounds}")
        if fedprox_mu < 0:
            raise ConfigError(f"fedprox_mu must be >= 0, got {fedprox_mu}")
        # validates the name and arguments at job start
        self._strategy = make_strategy(
            aggregator,
            policy=ValidationPolicy(max_num_examples=max_num_examples, norm_outlier_factor=norm_outlier_factor),
            **strategy_kwargs(aggregator, server_lr=server_lr, beta1=beta1, beta2=beta2, tau=tau, fedprox_mu=fedprox_mu),
        )
        self._store = MemoryStore()
        self._base_meta: dict = {}
        self._restored = ""  # the checkpoint folder FLARE's job snapshot named

    # -- RoundDriver ------------------------------------------------------------------------------
    def available_clients(self) -> List[str]:
        return sorted(c.name for c in self.engine.get_clients())

    def train(self, round_number, sites, global_model, meta) -> Dict[str, SiteResult]:
        task_model = FLModel(
            params_type=ParamsType.FULL, params=global_model, current_round=round_number,
            total_rounds=self.num_rounds, meta={**self._base_meta, keys.FEDPROX_MU: self.fedprox_mu, **meta},
        )
        replies = self.send_model_and_wait(
            task_name=self.train_task_name, data=task_model, targets=sites,
            min_responses=self.min_clients or None, timeout=self.train_timeout,
        )
        return {_client_name(reply): self._site_result(global_model, reply) for reply in replies}

    def publish(self, global_model, round_number, final) -> str:
        meta = {**self._base_meta, keys.ROUND: round_number, keys.FINAL: final}
        self.save_model(FLModel(params_type=ParamsType.FULL, params=global_model, meta=meta))
        return str(round_file(self._global_dir(), round_number))

    def aborted(self) -> bool:
        return self.abort_signal.triggered

    def warn(self, message: str) -> None:
        self.warning(message)

    def fail(self, message: str) -> None:
        self.panic(message)

    # -- FLARE ------------------------------------------------------------------------------------
    def run(self):
        model = self.load_model()
        if model is None:
            return
        self._base_meta = dict(model.meta or {})
        if keys.MODEL_SPEC not in self._base_meta:
            self.panic("the persistor must be a flaretune PeftAdapterPersistor (no model spec in its meta)")
            return
        global_params = {k: np.asarray(v) for k, v in model.params.items()}
        run_dir = Path(self.get_run_dir())
        try:
            resume = resume_point(self.engine.get_workspace().get_root_dir(), self._restored or self.resume_from,
                                  self._store)
            global_params, history = run_rounds(
                self, self._store, self._strategy, RoundSettings(self.num_rounds, self.min_clients, self.seed),
                global_params, self._global_dir() / HISTORY_FILE, Checkpoint(run_dir / CHECKPOINT_DIR), resume,
            )
        except FlaretuneError as err:
            self.panic(str(err))
            return
        if global_params is None or not self.final_validation or self.abort_signal.triggered:
            return
        final_model = FLModel(params_type=ParamsType.FULL, params=global_params, meta=dict(self._base_meta))
        results = self.send_model_and_wait(task_name=self.validate_task_name, data=final_model)
        history["final"] = {_client_name(r): r.metrics or {} for r in results}
        self.info(f"final global model on each site's test split: {summary(history['final'])}")
        write_history(self._global_dir() / HISTORY_FILE, history)

    def get_persist_state(self, fl_ctx) -> dict:
        """For FLARE's job snapshot (where the server keeps one): the checkpoint folder to resume from."""
        return {"checkpoint": str(Path(self.get_run_dir()) / CHECKPOINT_DIR)}

    def restore(self, state_data: dict, fl_ctx) -> None:
        self._restored = snapshot_folder(state_data)

    # -- helpers ----------------------------------------------------------------------------------
    def _global_dir(self) -> Path:
        folder = Path(self.get_run_dir()) / GLOBAL_MODEL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @staticmethod
    def _site_result(global_model, reply: FLModel) -> SiteResult:
        """The site's full parameters (a DIFF result is added to the global model it was trained from)."""
        meta = reply.meta or {}
        params = {k: np.asarray(v) for k, v in (reply.params or {}).items()}
        if reply.params_type == ParamsType.DIFF:  # validation then names what does not fit the global model
            params = {k: np.asarray(global_model[k]) + v if k in global_model and v.shape == np.shape(global_model[k])
                      else v for k, v in params.items()}
        return SiteResult(params, meta.get(keys.NUM_EXAMPLES), reply.metrics or {}, meta.get(keys.UPLOAD_BYTES))


def _client_name(result: FLModel) -> str:
    return str((result.meta or {}).get("client_name", "unknown"))
