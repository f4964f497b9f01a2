"""FLARE controller for FedBuff (Nguyen et al., 2022, arXiv:2106.06639): asynchronous, buffered aggregation.

No round barrier: every site is handed ``train`` as soon as it is free, with the global model current at that
moment; every ``buffer_size`` results make one staleness-weighted server update through the job's strategy
(``"aggregator": "fedadam"`` works asynchronously). The loop is
:func:`flaretune.aggregation.asyncrounds.run_buffered`, the math :mod:`flaretune.aggregation.buffer`. Results
are validated as in the synchronous :class:`~flaretune.aggregation.controller.FedAggController`, the server
checkpoints after every update and ``resume_from`` continues a job; a site that disconnects is not given
new tasks and nothing waits for it.
"""

import queue
import threading
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.workflows.model_controller import ModelController

from flaretune import keys
from flaretune.aggregation.asyncrounds import AsyncDriver, BufferSettings, run_buffered
from flaretune.aggregation.buffer import staleness_weight
from flaretune.aggregation.checkpoint import CHECKPOINT_DIR, Checkpoint, resume_point, snapshot_folder
from flaretune.aggregation.controller import FedAggController, _client_name
from flaretune.aggregation.persistor import GLOBAL_MODEL_DIR, round_file
from flaretune.aggregation.rounds import HISTORY_FILE, MemoryStore, summary, write_history
from flaretune.aggregation.sampling import ClientSampling
from flaretune.aggregation.strategy import make_strategy, strategy_kwargs
from flaretune.aggregation.validation import ValidationPolicy
from flaretune.errors import SITE_ERROR_HEADER, ConfigError, FlaretuneError


class FedBuffController(ModelController, AsyncDriver):
    """Buffered asynchronous aggregation to ``num_updates`` server updates, then one ``validate`` of the model."""

    def __init__(
        self,
        num_updates: int = 10,
        buffer_size: int = 2,
        staleness: str = "sqrt",
        staleness_exponent: float = 0.5,
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
        persistor_id: str = "persistor",
        max_num_examples: float = 1_000_000,
        norm_outlier_factor: float = 10.0,
        seed: int = 0,
        resume_from: str = "",
    ):
        """
        Args:
            num_updates: server updates in total (a resumed job counts those it already made).
            buffer_size: results (K) per server update.
            staleness: ``sqrt`` (1/sqrt(1+s), the paper's), ``constant`` (1) or ``poly`` ((1+s)^-exponent).
            staleness_exponent: the exponent of ``poly``.
            aggregator, server_lr, beta1, beta2, tau, fedprox_mu, max_num_examples, norm_outlier_factor, seed,
            resume_from: as for FedAggController.
            min_clients: sites that must be connected to hand out work (0: one); below it the job waits.
        """
        super().__init__(persistor_id=persistor_id, ignore_result_error=True)
        self.num_updates = num_updates
        self.buffer_size = buffer_size
        self.staleness = staleness
        self.staleness_exponent = staleness_exponent
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
        self.max_num_examples = max_num_examples
        self.norm_outlier_factor = norm_outlier_factor
        self.seed = seed
        self.resume_from = resume_from
        for name, value in (("num_updates", num_updates), ("buffer_size", buffer_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        self._weight = staleness_weight(staleness, staleness_exponent)
        self._strategy = make_strategy(
            aggregator,
            policy=ValidationPolicy(max_num_examples=max_num_examples, norm_outlier_factor=norm_outlier_factor),
            sampling=ClientSampling(min_clients=min_clients),
            **strategy_kwargs(aggregator, server_lr=server_lr, beta1=beta1, beta2=beta2, tau=tau, fedprox_mu=fedprox_mu),
        )
        self._store = MemoryStore()
        self._base_meta: dict = {}
        self._restored = ""
        self._lock = threading.Lock()
        self._done: "queue.Queue" = queue.Queue()  # (site, reply or None) as each train task ends
        self._replies: Dict[str, FLModel] = {}
        self._sent: Dict[str, dict] = {}  # the model each busy site trains from (to add a DIFF result to)
        self._errors: Dict[str, str] = {}

    # -- AsyncDriver ------------------------------------------------------------------------------
    def available_clients(self):
        clients = sorted(c.name for c in self.engine.get_clients() if not self.get_client_disconnect_time(c.name))
        return clients if len(clients) >= max(1, self.min_clients) else []

    def dispatch(self, site, version, global_model, meta) -> None:
        self._sent[site] = global_model
        task_model = FLModel(params_type=ParamsType.FULL, params=global_model, current_round=version,
                             total_rounds=self.num_updates,
                             meta={**self._base_meta, keys.FEDPROX_MU: self.fedprox_mu, **meta})
        self.send_model(task_name=self.train_task_name, data=task_model, targets=[site], min_responses=0,
                        callback=self._collect)

    def next_result(self, timeout):
        try:
            site, reply = self._done.get(timeout=timeout)
        except queue.Empty:
            return None
        if reply is None:
            return site, None
        return site, FedAggController._site_result(self._sent.pop(site, {}), reply)

    def _collect(self, reply: FLModel):
        with self._lock:
            self._replies[_client_name(reply)] = reply
        return True

    def _process_result(self, client_task, fl_ctx) -> None:
        site = client_task.client.name
        error = client_task.result.get_header(SITE_ERROR_HEADER) if client_task.result is not None else None
        super()._process_result(client_task, fl_ctx)
        with self._lock:
            reply = self._replies.pop(site, None)
            if reply is None:
                self._errors[site] = str(error or "its train task failed (see the site's log)").removeprefix(f"{site}: ")
        self._done.put((site, reply))

    def missing_reason(self, site: str) -> str:
        return self._errors.pop(site, "no result")

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
        settings = BufferSettings(self.num_updates, self.buffer_size, self._weight, self.staleness, self.seed)
        try:
            resume = resume_point(self.engine.get_workspace().get_root_dir(), self._restored or self.resume_from,
                                  self._store)
            global_params, history = run_buffered(
                self, self._store, self._strategy, settings, global_params, self._global_dir() / HISTORY_FILE,
                Checkpoint(run_dir / CHECKPOINT_DIR), resume)
        except FlaretuneError as err:
            self.panic(str(err))
            return
        finally:
            self.cancel_all_tasks()  # the sites still training from an older model are not waited for
        if global_params is None or not self.final_validation or self.abort_signal.triggered:
            return
        final_model = FLModel(params_type=ParamsType.FULL, params=global_params, meta=dict(self._base_meta))
        alive = [c.name for c in self.engine.get_clients() if not self.get_client_disconnect_time(c.name)]
        results = self.send_model_and_wait(task_name=self.validate_task_name, data=final_model,
                                           targets=alive) if alive else []
        history["final"] = {_client_name(r): r.metrics or {} for r in results}
        self.info(f"final global model on each site's test split: {summary(history['final'])}")
        write_history(self._global_dir() / HISTORY_FILE, history)

    def get_persist_state(self, fl_ctx) -> dict:
        return {"checkpoint": str(Path(self.get_run_dir()) / CHECKPOINT_DIR)}

    def restore(self, state_data: dict, fl_ctx) -> None:
        self._restored = snapshot_folder(state_data)

    def _global_dir(self) -> Path:
        folder = Path(self.get_run_dir()) / GLOBAL_MODEL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return folder
