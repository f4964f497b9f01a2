"""FLARE server side of split learning: the middle blocks, served to every site over FLARE aux messages.

Each round (FL-GLM, arXiv:2406.14898) the controller broadcasts one ``split_train`` task. While a site
runs it, every batch is two request/reply exchanges over FLARE's aux channel (cell messaging, no other
socket): ``split.forward`` (lower-cut activations -> upper-cut activations) and ``split.backward``
(upper-cut gradient -> lower-cut gradient), served by a :class:`~flaretune.split.serve.StepBatcher`
that batches the sites that arrive together into one middle step. ``split.leave`` (sent by a site when
its epoch ends or fails) and the task's result stop the server waiting for that site; the other sites
carry on, and a round's average leaves out a site whose task failed.

Client parts: FL-GLM averages them. Each site returns its bottom and top tensors (LoRA matrices of its
edge blocks and the head) with its example count at the end of the round, as a WEIGHTS DXO that the site's
privacy filters check (:func:`flaretune.split.wire.weights`); the server averages them
(FedAvg weights) and sends the mean with the next round's task. The union of the averaged client parts
and the server's middle is the global adapter, saved by the job's :class:`PeftAdapterPersistor` each round
(``global_model/round-NNN.safetensors``, the adapter folder at the end), so ``flaretune compare`` and
``predict`` read it as they read a federated LoRA job's. ``history.json`` keeps each site's per-step
bytes, seconds and peak memory.
"""

import json
import time
from pathlib import Path
from typing import Dict

import numpy as np

from nvflare.apis.client import Client
from nvflare.apis.controller_spec import ClientTask, Task
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.impl.controller import Controller
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.model import make_model_learnable

from flaretune import keys
from flaretune.errors import SITE_ERROR_HEADER, ConfigError
from flaretune.split import wire

TRAIN_TASK = "split_train"


class SplitLearningController(Controller):
    """Args:
        num_rounds: epochs of split training (each site passes over its data once a round).
        persistor_id: a :class:`~flaretune.aggregation.persistor.PeftAdapterPersistor` (the spec, the saved model).
        bottom_layers / top_layers: blocks kept at the sites below and above the server's middle.
        learning_rate: the middle's AdamW step size (the sites set their own).
        sigma: standard deviation of the Gaussian noise each site adds to the activations it sends (FL-LLaMA).
        site_timeout: seconds a middle step waits for a site before it is dropped from the round.
        train_timeout: seconds a round's task may run (0: no limit).
        num_threads: torch threads of the server (0: torch's default).
    """

    def __init__(self, num_rounds: int = 2, persistor_id: str = "persistor", bottom_layers: int = 1,
                 top_layers: int = 1, learning_rate: float = 1e-3, sigma: float = 0.0, site_timeout: float = 120.0,
                 train_timeout: int = 0, num_threads: int = 0, min_clients: int = 1):
        super().__init__()
        self.num_rounds = num_rounds
        self.persistor_id = persistor_id
        self.bottom_layers = bottom_layers
        self.top_layers = top_layers
        self.learning_rate = learning_rate
        self.sigma = sigma
        self.site_timeout = site_timeout
        self.train_timeout = train_timeout
        self.num_threads = num_threads
        self.min_clients = min_clients
        if not isinstance(num_rounds, int) or num_rounds < 1:
            raise ConfigError(f"num_rounds must be an int >= 1, got {num_rounds!r}")
        if not sigma >= 0:
            raise ConfigError(f"sigma must be >= 0, got {sigma!r}")
        if not site_timeout > 0:
            raise ConfigError(f"site_timeout must be > 0 (seconds), got {site_timeout!r}")
        self._batcher = None
        self._persistor = None
        self._history: list = []

    # -- set-up: the server's model and the aux topics -----------------------------------------------
    def start_controller(self, fl_ctx: FLContext) -> None:
        from flaretune.models.lora import load_adapter_state
        from flaretune.split.model import split_token_classifier
        from flaretune.split.serve import StepBatcher
        from flaretune.split.steps import MiddleServer
        from flaretune.train.lora_trainer import set_threads

        set_threads(self.num_threads)
        engine = fl_ctx.get_engine()
        self._persistor = engine.get_component(self.persistor_id)
        if self._persistor is None or not hasattr(self._persistor, "spec"):
            raise ConfigError(f"persistor_id {self.persistor_id!r}: no PeftAdapterPersistor with that id")
        self.spec = self._persistor.spec
        learnable = self._persistor.load_model(fl_ctx)
        self.model = self.spec.build()
        load_adapter_state(self.model, learnable["weights"])
        self.n_layers = len(self.model.get_base_model().bert.encoder.layer)
        if 0 <= self.bottom_layers < self.n_layers and self.bottom_layers + self.top_layers >= self.n_layers:
            fitted = self.n_layers - 1 - self.bottom_layers  # e.g. the 2-block tiny twin under the job's 1 + 1
            self.log_warning(fl_ctx, f"{self.spec.model_name} has {self.n_layers} blocks: top_layers {self.top_layers} "
                                     f"-> {fitted}, so the server keeps one")
            self.top_layers = fitted
        parts = split_token_classifier(self.model, self.bottom_layers, self.top_layers)
        parts.middle.train()
        self._batcher = StepBatcher(MiddleServer(parts.middle, self.learning_rate), self.site_timeout)
        self._site_params = self._partition(learnable["weights"])[0]
        for topic, handler in ((wire.FORWARD, self._forward), (wire.BACKWARD, self._backward),
                               (wire.LEAVE, self._leave)):
            engine.register_aux_message_handler(topic=topic, message_handle_func=handler)
        self.log_info(fl_ctx, f"split learning: {self.n_layers} blocks; sites keep embeddings + {self.bottom_layers} "
                              f"and {self.top_layers} + head, the server runs {self.n_layers - self.bottom_layers - self.top_layers}")

    def _partition(self, params):
        from flaretune.split.model import partition

        return partition(params, self.n_layers, self.bottom_layers, self.top_layers)

    def stop_controller(self, fl_ctx: FLContext) -> None:
        pass

    def process_result_of_unknown_task(self, client: Client, task_name: str, client_task_id: str,
                                       result: Shareable, fl_ctx: FLContext) -> None:
        self.log_warning(fl_ctx, f"ignored a late result of {task_name} from {client.name}")

    # -- aux handlers (one pool thread per request) --------------------------------------------------
    def _site(self, fl_ctx: FLContext) -> str:
        return fl_ctx.get_peer_context().get_identity_name()

    def _serve(self, fl_ctx, call):
        from flaretune.split.serve import SiteDropped

        if self._batcher is None:
            return make_reply(ReturnCode.SERVICE_UNAVAILABLE)
        try:
            return call()
        except SiteDropped as err:
            reply = make_reply(ReturnCode.EXECUTION_EXCEPTION)
            reply.set_header(SITE_ERROR_HEADER, str(err))
            return reply

    def _forward(self, topic: str, request: Shareable, fl_ctx: FLContext) -> Shareable:
        site = self._site(fl_ctx)
        return self._serve(fl_ctx, lambda: wire.reply(self._batcher.forward(site, *wire.read(request, "hidden", "mask"))))

    def _backward(self, topic: str, request: Shareable, fl_ctx: FLContext) -> Shareable:
        site = self._site(fl_ctx)
        return self._serve(fl_ctx, lambda: wire.reply(self._batcher.backward(site, *wire.read(request, "grad"))))

    def _leave(self, topic: str, request: Shareable, fl_ctx: FLContext) -> Shareable:
        if self._batcher is not None:
            self._batcher.leave(self._site(fl_ctx))
        return make_reply(ReturnCode.OK)

    # -- rounds ----------------------------------------------------------------------------------------
    def control_flow(self, abort_signal: Signal, fl_ctx: FLContext) -> None:
        from flaretune.models.lora import adapter_state

        for round_number in range(self.num_rounds):
            if abort_signal.triggered:
                return
            sites = [c.name for c in fl_ctx.get_engine().get_clients()]
            self._batcher.begin(sites)
            data = wire.weights({k: np.asarray(v) for k, v in self._site_params.items()},
                                {"round": round_number, "num_rounds": self.num_rounds,
                                 keys.MODEL_SPEC: self.spec.to_dict(), "bottom_layers": self.bottom_layers,
                                 "top_layers": self.top_layers, "sigma": self.sigma})
            results: Dict[str, Shareable] = {}
            task = Task(name=TRAIN_TASK, data=data, timeout=int(self.train_timeout),
                        result_received_cb=lambda client_task, fl_ctx: self._on_result(client_task, results))
            started = time.monotonic()
            self.broadcast(task, fl_ctx, targets=None, min_responses=len(sites), wait_time_after_min_received=0)
            if not self._wait(task, sites, results, abort_signal, fl_ctx):
                return
            good = {s: wire.read_weights(r) for s, r in results.items()
                    if r.get_return_code(ReturnCode.OK) == ReturnCode.OK}
            failed = sorted(set(sites) - set(good))
            if len(good) < self.min_clients:
                self.system_panic(f"round {round_number + 1}/{self.num_rounds}: {len(good)} sites finished "
                                  f"(failed or missing: {', '.join(failed)}); min_clients is {self.min_clients}", fl_ctx)
                return
            self._site_params = _weighted_mean({s: r["site_params"] for s, r in good.items()},
                                               {s: int(r["num_examples"]) for s, r in good.items()})
            middle = self._partition({k: v.numpy() for k, v in adapter_state(self.model).items()})[1]
            weights = {**self._site_params, **middle}
            final = round_number == self.num_rounds - 1
            self._persistor.save_model(make_model_learnable(weights, {keys.ROUND: round_number, keys.FINAL: final}),
                                       fl_ctx)
            record = {"round": round_number, "seconds": round(time.monotonic() - started, 2),
                      "middle_steps": self._batcher.groups, "failed": failed,
                      "sites": {s: dict(r["stats"]) for s, r in good.items()}}
            self._batcher.groups, self._batcher.group_sizes = 0, []
            self._history.append(record)
            self._write_history(fl_ctx)
            losses = ", ".join(f"{s} loss {st['train_loss']:.4f}" for s, st in sorted(record["sites"].items()))
            self.log_info(fl_ctx, f"round {round_number + 1}/{self.num_rounds}: {record['middle_steps']} middle steps, "
                                  f"{losses}{'; failed: ' + ', '.join(failed) if failed else ''}")

    def _wait(self, task: Task, sites, results: Dict[str, Shareable], abort_signal: Signal, fl_ctx: FLContext) -> bool:
        """Until every site has answered the round's task or gone silent for ``site_timeout`` (a site that
        exited); False on abort."""
        while task.completion_status is None:
            if abort_signal.triggered:
                self.cancel_task(task, fl_ctx=fl_ctx)
                return False
            if all(s in results or self._batcher.silent(s) for s in sites):
                gone = sorted(s for s in sites if s not in results)
                self.log_warning(fl_ctx, f"no word from {', '.join(gone)} for {self.site_timeout:g}s: the round goes on without them")
                self.cancel_task(task, fl_ctx=fl_ctx)
                break
            time.sleep(0.2)
        return True

    def _on_result(self, client_task: ClientTask, results: Dict[str, Shareable]) -> None:
        site = client_task.client.name
        result = client_task.result
        self._batcher.leave(site)
        if result is not None:
            results[site] = result

    def _write_history(self, fl_ctx: FLContext) -> None:
        workspace = fl_ctx.get_engine().get_workspace()
        folder = Path(workspace.get_run_dir(fl_ctx.get_job_id())) / "global_model"
        folder.mkdir(parents=True, exist_ok=True)
        cut = {"n_layers": self.n_layers, "bottom_layers": self.bottom_layers, "top_layers": self.top_layers,
               "client_parts_bytes": int(sum(np.asarray(v).nbytes for v in self._site_params.values()))}
        (folder / "history.json").write_text(json.dumps({"cut": cut, "rounds": self._history}, indent=2))


def _weighted_mean(params: Dict[str, dict], weights: Dict[str, int]) -> dict:
    """FedAvg of the sites' client parts (McMahan et al., 2017, arXiv:1602.05629)."""
    total = sum(weights.values())
    names = next(iter(params.values())).keys()
    return {k: sum(np.asarray(params[s][k], dtype=np.float64) * (weights[s] / total) for s in params).astype(np.float32)
            for k in names}
