"""FLARE controller: FedAvg / FedProx / FedOpt rounds over adapter tensors held in memory.

The round loop is :func:`flaretune.aggregation.rounds.run_rounds`, shared with the streamed full-model
workflow; which server step runs is a string name (:mod:`flaretune.aggregation.strategy`), so a job picks
``"aggregator": "fedadam"`` in JSON. Every result is validated before it is aggregated, and the server
checkpoints after every round (``checkpoint/`` in the run folder); ``resume_from`` continues a job from
such a folder.

Sites drop out and straggle: a round waits for every selected site until its ``train_timeout`` deadline, then
completes with the sites that answered if at least ``min_clients`` did (k-of-n); a result that arrives after
the round closed is logged and dropped, and its site trains again in the next round from the then-current
global model. When fewer than ``min_clients`` results can still come (sites silent past the deadline, errors,
or FLARE deems them disconnected), the round waits up to ``min_clients_wait`` seconds more, then the job stops
with one message naming the missing sites.
"""

import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.workflows.model_controller import ModelController

from flaretune import keys
from flaretune.aggregation.checkpoint import CHECKPOINT_DIR, Checkpoint, resume_point, snapshot_folder
from flaretune.aggregation.persistor import GLOBAL_MODEL_DIR, round_file
from flaretune.aggregation.rounds import (
    HISTORY_FILE, MemoryStore, RoundDriver, RoundSettings, SiteResult, run_rounds, summary, write_history,
)
from flaretune.aggregation.sampling import ClientSampling
from flaretune.aggregation.strategy import make_strategy, strategy_kwargs
from flaretune.aggregation.validation import ValidationPolicy
from flaretune.errors import SITE_ERROR_HEADER, ConfigError, FlaretuneError


class AdapterJobController(ModelController):
    """What the synchronous and the buffered controllers share: load the persistor's adapter, drive a loop
    (:meth:`drive`), publish and checkpoint through it, resume from FLARE's snapshot or ``resume_from``, then
    one ``validate`` of the final model on every connected site. A subclass keeps ``final_validation``,
    ``validate_task_name`` and ``resume_from`` and sets ``_store``, ``_strategy``, ``_base_meta``, ``_restored``."""

    def drive(self, global_params, history_path: Path, checkpoint: Checkpoint, resume):
        """Run the job's loop from ``global_params``; ``(final parameters or None, history)``."""
        raise NotImplementedError

    def final_timeout(self) -> int:
        """Seconds the final ``validate`` waits for the sites (0: no deadline)."""
        return 0

    # -- the loop's driver side, as FLARE provides it ---------------------------------------------
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
        try:
            resume = resume_point(self.engine.get_workspace().get_root_dir(), self._restored or self.resume_from,
                                  self._store)
            global_params, history = self.drive(global_params, self._global_dir() / HISTORY_FILE,
                                                Checkpoint(Path(self.get_run_dir()) / CHECKPOINT_DIR), resume)
        except FlaretuneError as err:
            self.panic(str(err))
            return
        finally:
            self.cancel_all_tasks()  # nothing still out (a straggler of FedBuff) is waited for
        if global_params is None or not self.final_validation or self.abort_signal.triggered:
            return
        final_model = FLModel(params_type=ParamsType.FULL, params=global_params, meta=dict(self._base_meta))
        alive = [c.name for c in self.engine.get_clients() if not self.get_client_disconnect_time(c.name)]
        results = self.send_model_and_wait(task_name=self.validate_task_name, data=final_model, targets=alive,
                                           timeout=self.final_timeout()) if alive else []
        history["final"] = {_client_name(r): r.metrics or {} for r in results}
        self.info(f"final global model on each site's test split: {summary(history['final'])}")
        write_history(self._global_dir() / HISTORY_FILE, history)

    def get_persist_state(self, fl_ctx) -> dict:
        """For FLARE's job snapshot (where the server keeps one): the checkpoint folder to resume from."""
        return {"checkpoint": str(Path(self.get_run_dir()) / CHECKPOINT_DIR)}

    def restore(self, state_data: dict, fl_ctx) -> None:
        self._restored = snapshot_folder(state_data)

    def _global_dir(self) -> Path:
        folder = Path(self.get_run_dir()) / GLOBAL_MODEL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class FedAggController(AdapterJobController, RoundDriver):
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
        min_clients_wait: float = 300.0,
        persistor_id: str = "persistor",
        max_num_examples: float = 1_000_000,
        norm_outlier_factor: float = 10.0,
        seed: int = 0,
        resume_from: str = "",
        sample_fraction: float = 1.0,
        sample_count: Optional[int] = None,
        sampling: str = "uniform",
    ):
        """
        Args:
            num_rounds: rounds in total (a resumed job counts the rounds it already completed).
            aggregator: fedavg, fedprox, fedavgm, fedadagrad, fedadam or fedyogi; server_lr, beta1, beta2,
                tau go to the FedOpt ones, fedprox_mu to fedprox (and to every site as its proximal weight).
            min_clients: accepted results a round needs (0: one).
            train_timeout: seconds a round waits for the selected sites (0: no deadline); at the deadline it
                completes with the results it has if there are ``min_clients`` of them.
            min_clients_wait: seconds a round waits on top, when fewer than ``min_clients`` results can still
                come, before the job stops with one message naming the missing sites.
            max_num_examples / norm_outlier_factor: result validation (see flaretune.aggregation.validation).
            seed: seed of the client-sampling RNG (checkpointed with the rest).
            resume_from: a ``checkpoint`` folder of an earlier run of this job (absolute, or relative to the
                server's workspace root); the job continues after its last completed round.
            sample_fraction / sample_count / sampling: which of the sites connected at a round train it
                (flaretune.aggregation.sampling): a fraction in (0, 1] or a count >= 1 of them, never fewer than
                min_clients, drawn ``uniform`` or ``weighted`` by data size from the seeded RNG.
        """
        # a site's error is one missing result: the round loop decides against min_clients, not FLARE
        super().__init__(persistor_id=persistor_id, ignore_result_error=True)
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
        self.min_clients_wait = min_clients_wait
        self.max_num_examples = max_num_examples
        self.norm_outlier_factor = norm_outlier_factor
        self.seed = seed
        self.resume_from = resume_from
        self.sample_fraction = sample_fraction
        self.sample_count = sample_count
        self.sampling = sampling
        if num_rounds < 1:
            raise ConfigError(f"num_rounds must be >= 1, got {num_rounds}")
        if isinstance(min_clients, bool) or not isinstance(min_clients, int) or min_clients < 0:
            raise ConfigError(f"min_clients must be an integer >= 0, got {min_clients!r}")
        for name, value in (("train_timeout", train_timeout), ("min_clients_wait", min_clients_wait)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if fedprox_mu < 0:
            raise ConfigError(f"fedprox_mu must be >= 0, got {fedprox_mu}")
        # validates the name and arguments at job start
        self._strategy = make_strategy(
            aggregator,
            policy=ValidationPolicy(max_num_examples=max_num_examples, norm_outlier_factor=norm_outlier_factor),
            sampling=ClientSampling(sample_fraction, sample_count, sampling, min_clients),
            **strategy_kwargs(aggregator, server_lr=server_lr, beta1=beta1, beta2=beta2, tau=tau, fedprox_mu=fedprox_mu),
        )
        self._store = MemoryStore()
        self._base_meta: dict = {}
        self._restored = ""  # the checkpoint folder FLARE's job snapshot named
        self._lock = threading.Lock()
        self._open_round: Optional[int] = None  # the round whose results are being collected
        self._replies: Dict[str, FLModel] = {}  # not self._results: FLARE's base class keeps its own
        self._answered: set = set()  # sites that answered the open round (with a result or an error)
        self._missing: Dict[str, str] = {}  # why each site sent nothing in the last round
        self._site_errors: Dict[str, str] = {}  # the one-line reason a site's error reply carried
        self._late: List[dict] = []  # results dropped since the last round record

    # -- RoundDriver ------------------------------------------------------------------------------
    def available_clients(self) -> List[str]:
        """The job's sites that are connected now (one that left is not selected again until it is back)."""
        return sorted(c.name for c in self.engine.get_clients() if not self.get_client_disconnect_time(c.name))

    def train(self, round_number, sites, global_model, meta) -> Dict[str, SiteResult]:
        task_model = FLModel(
            params_type=ParamsType.FULL, params=global_model, current_round=round_number,
            total_rounds=self.num_rounds, meta={**self._base_meta, keys.FEDPROX_MU: self.fedprox_mu, **meta},
        )
        with self._lock:
            self._open_round, self._replies, self._answered, self._missing = round_number, {}, set(), {}
            self._site_errors = {}
        # wait for every site (min_responses 0); the deadline and k-of-n are decided here, not by FLARE
        self.send_model(task_name=self.train_task_name, data=task_model, targets=sites, min_responses=0,
                        callback=self._collect)
        try:
            self._wait_round(round_number, sites)
        finally:
            with self._lock:
                self._open_round = None
                replies, answered = dict(self._replies), set(self._answered)
            self._close_tasks()
        for site in sorted(answered - set(replies)):
            self._missing[site] = self._site_errors.get(site, "its train task failed (see the site's log)")
            self.warn(f"round {round_number + 1}/{self.num_rounds}: no result from {site}: {self._missing[site]}")
        return {site: self._site_result(global_model, reply) for site, reply in replies.items()}

    def _wait_round(self, round_number: int, sites: List[str]) -> None:
        """Until every site answered, or the deadline passed with ``min_clients`` results, or the extra wait
        for too few results ran out."""
        needed, n = max(1, self.min_clients), self.num_rounds
        started = time.monotonic()
        deadline = started + self.train_timeout if self.train_timeout else float("inf")
        give_up = None
        while not self.abort_signal.triggered:
            with self._lock:
                answered, received = set(self._answered), len(self._replies)
            silent = [s for s in sites if s not in answered]
            if not silent:
                return
            now = time.monotonic()
            dead = [s for s in silent if self.get_client_disconnect_time(s)]
            if len(dead) == len(silent) and received >= needed:  # those left have gone: no one to wait for
                self.warn(f"round {round_number + 1}/{n}: {', '.join(dead)} disconnected; the round completes "
                          f"with {received} of {len(sites)} sites")
                self._missing = {s: "disconnected during the round" for s in dead}
                return
            if now >= deadline and received >= needed:
                self.warn(f"round {round_number + 1}/{n}: deadline of {self.train_timeout:g}s passed; the round "
                          f"completes with {received} of {len(sites)} sites; no result from {', '.join(silent)} "
                          f"(a late result is dropped; the site trains again next round)")
                self._missing = {s: f"no result within the {self.train_timeout:g}s deadline" for s in silent}
                return
            if now < deadline and received + len(silent) - len(dead) >= needed:
                give_up = None  # enough sites can still answer (a disconnected one may have come back)
            else:
                if give_up is None:
                    give_up = now + self.min_clients_wait
                    self.warn(f"round {round_number + 1}/{n}: {received} result(s), {needed} needed "
                              f"(min_clients); waiting up to {self.min_clients_wait:g}s for {', '.join(silent)}"
                              + (f" (disconnected: {', '.join(dead)})" if dead else ""))
                if now >= give_up:
                    waited = (f"within the {self.train_timeout:g}s deadline and {self.min_clients_wait:g}s wait"
                              if self.train_timeout else f"within {now - started:.0f}s")
                    self._missing = {s: ("disconnected, no answer " if s in dead else "no answer ") + waited
                                     for s in silent}
                    return
            time.sleep(0.2)

    def _collect(self, reply: FLModel):
        """FLARE's callback for each result of the standing ``train`` task."""
        site = _client_name(reply)
        with self._lock:
            if self._open_round is not None and reply.current_round in (None, self._open_round):
                self._replies[site] = reply
                return True
        self._drop_late(site, reply.current_round)
        return False

    def _process_result(self, client_task, fl_ctx) -> None:
        site = client_task.client.name
        error = client_task.result.get_header(SITE_ERROR_HEADER) if client_task.result is not None else None
        super()._process_result(client_task, fl_ctx)
        with self._lock:  # after the callback stored it: an answered site's result is in self._replies
            self._answered.add(site)
            if error:
                self._site_errors[site] = str(error).removeprefix(f"{site}: ")

    def process_result_of_unknown_task(self, client, task_name, client_task_id, result, fl_ctx) -> None:
        """A result of a task that closed at its deadline: logged and dropped (never aggregated)."""
        from nvflare.app_common.app_constant import AppConstants

        self._drop_late(client.name, result.get_header(AppConstants.CURRENT_ROUND, None), task_name)

    def _drop_late(self, site: str, round_number, task_name: str = "") -> None:
        task_name = task_name or self.train_task_name
        shown = f"round {round_number + 1}/{self.num_rounds}" if isinstance(round_number, int) else "a closed round"
        self.warn(f"late {task_name} result of {site} for {shown} dropped: the round had closed")
        with self._lock:
            self._late.append({"site": site, "round": round_number, "task": task_name})

    def _close_tasks(self) -> None:
        """Cancel what is still standing (the silent sites' tasks) and wait until FLARE removed it."""
        self.cancel_all_tasks()
        stop = time.monotonic() + 10
        while self.get_num_standing_tasks() and time.monotonic() < stop:
            time.sleep(0.1)

    def missing_reason(self, site: str) -> str:
        return self._missing.get(site, "no result")

    def round_info(self) -> dict:
        with self._lock:
            late, self._late = self._late, []
        return {"late": late}

    # -- AdapterJobController ---------------------------------------------------------------------
    def drive(self, global_params, history_path, checkpoint, resume):
        return run_rounds(self, self._store, self._strategy, RoundSettings(self.num_rounds, self.min_clients, self.seed),
                          global_params, history_path, checkpoint, resume)

    def final_timeout(self) -> int:
        return int(self.train_timeout)

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
