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
from typing import Dict

from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

from flaretune import keys
from flaretune.aggregation.asyncrounds import AsyncDriver, BufferSettings, run_buffered
from flaretune.aggregation.buffer import staleness_weight
from flaretune.aggregation.controller import AdapterJobController, FedAggController, _client_name
from flaretune.aggregation.rounds import MemoryStore
from flaretune.aggregation.sampling import ClientSampling
from flaretune.aggregation.strategy import make_strategy, strategy_kwargs
from flaretune.aggregation.validation import ValidationPolicy
from flaretune.errors import SITE_ERROR_HEADER, ConfigError


class FedBuffController(AdapterJobController, AsyncDriver):
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

    # -- AdapterJobController ---------------------------------------------------------------------
    def drive(self, global_params, history_path, checkpoint, resume):
        settings = BufferSettings(self.num_updates, self.buffer_size, self._weight, self.staleness, self.seed)
        return run_buffered(self, self._store, self._strategy, settings, global_params, history_path, checkpoint,
                            resume)
