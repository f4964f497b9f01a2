"""The FLARE glue every flaretune LoRA executor shares; subclasses add a trainer and site data.

Tasks: ``train`` (evaluate the received global adapter, train locally, return the trainable tensors),
``validate`` (score the received adapter on the site's test split), ``submit_model`` (return the
site's last local adapter). Only trainable tensors leave the site; the frozen base never does.

A subclass supplies four things: :meth:`load_data` (the site's ``SiteData``), :meth:`make_trainer`
(a :class:`flaretune.train.protocol.Trainer`), :meth:`flat_metrics` (the trainer's scores as flat
floats) and :attr:`headlines` (the metrics the log line names, first one present wins). The round
itself is :func:`flaretune.train.flow.local_round`, the same for every executor.
"""

import os
import time
from typing import Optional

import numpy as np

from nvflare.apis.dxo import MetaKey
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from flaretune import keys
from flaretune.data.site import DATA_DIR_ENV
from flaretune.errors import SITE_ERROR_HEADER, ConfigError, FlaretuneError
from flaretune.models.lora import PeftSpec
from flaretune.paths import resolve_site_dir
from flaretune.train.flow import TIMESTAMPS, LocalTraining, headline, local_round, peak_rss_mb, round_line

PEAK_RSS_MB = "peak_rss_mb"  # result metric: the site process's peak resident memory so far, MiB


class PeftExecutor(Executor):
    """Base class: task dispatch, spec handling, global/local evaluation, full or diff results, abort, tracking.

    ``base_model_dir`` (optional): start from a model folder at the site instead of the named package
    model — relative to the site's workspace root, ``{site_name}`` replaced — e.g. ``models/base``, where a
    ``model_push`` workflow that runs before training delivers it.

    ``method`` (optional): this site's client method instead of the job's (the spec's ``method``), e.g. a
    forward-only or 4-bit method at a site with little memory; it must exchange the same tensors as the job's
    (:func:`flaretune.train.methods.site_spec`). Empty: the job's method.
    """

    headlines = ("f1",)

    def __init__(
        self,
        data_path: str = "",
        local_epochs: float = 1.0,
        max_steps: int = 0,
        learning_rate: float = 1e-3,
        batch_size: int = 16,
        max_length: int = 64,
        seed: int = 0,
        send_diff: bool = False,
        num_threads: int = 0,
        warmup_ratio: float = 0.0,
        lr_schedule: str = "constant",
        train_step: str = "backprop",
        train_step_args: Optional[dict] = None,
        dp_epsilon_budget: float = 0.0,
        dp_delta: float = 1e-5,
        dp_accountant: str = "rdp",
        train_task_name: str = "train",
        validate_task_name: str = "validate",
        submit_model_task_name: str = "submit_model",
        tracking_writer_id: str = "tb_writer",
        base_model_dir: str = "",
        method: str = "",
    ):
        super().__init__()
        # FLARE's job exporter reads each constructor argument back from self.<name>
        self.base_model_dir = base_model_dir
        self.method = method
        self.data_path = data_path
        self.local_epochs = local_epochs
        self.max_steps = max_steps
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed = seed
        self.send_diff = send_diff
        self.num_threads = num_threads
        self.warmup_ratio = warmup_ratio
        self.lr_schedule = lr_schedule
        self.train_step = train_step
        self.train_step_args = train_step_args
        self.dp_epsilon_budget = dp_epsilon_budget
        self.dp_delta = dp_delta
        self.dp_accountant = dp_accountant
        self.train_task_name = train_task_name
        self.validate_task_name = validate_task_name
        self.submit_model_task_name = submit_model_task_name
        self.tracking_writer_id = tracking_writer_id
        self._settings = LocalTraining(
            epochs=local_epochs, max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
            warmup_ratio=warmup_ratio, schedule=lr_schedule, train_step=train_step,
            step_args=dict(train_step_args or {}),
        )
        if method:
            from flaretune.train.methods import validate_method

            validate_method(method)
        if train_step == "dpsgd" and not dp_epsilon_budget > 0:
            raise ConfigError("train_step 'dpsgd' needs dp_epsilon_budget > 0 (the site's total epsilon at dp_delta)")
        self._dp = None
        self._trainer = None
        self._train = self._test = None
        self._local_params = None
        self._writer = None

    # -- what a subclass provides ---------------------------------------------------------------
    def load_data(self, site_name: str):
        """The site's ``SiteData`` (train, test, source)."""
        raise NotImplementedError

    def make_trainer(self, spec: PeftSpec, base_dir=None):
        """A trainer with ``encode``/``fit``/``evaluate``/``get_params``/``set_params``/``trainable_count``;
        its base model comes from the folder ``base_dir`` when given."""
        raise NotImplementedError

    def flat_metrics(self, scores: dict, prefix: str = "") -> dict:
        """The trainer's scores as flat floats FLARE can carry and TensorBoard can plot."""
        raise NotImplementedError

    # -- set-up ---------------------------------------------------------------------------------
    def _prepare(self, spec_dict: dict, fl_ctx: FLContext) -> None:
        spec = PeftSpec.from_dict(spec_dict)
        if self.method and self.method != spec.method:
            from flaretune.train.methods import site_spec

            spec = site_spec(spec, self.method)
        if self._trainer is not None and self._trainer.spec == spec:
            return
        site = fl_ctx.get_identity_name()
        try:
            data = self.load_data(site)
        except FlaretuneError as err:  # name the site and the setting that led there (path:line: is kept)
            where = "data_path: " if self.data_path else "$FLARETUNE_DATA_DIR: " if os.environ.get(DATA_DIR_ENV) else ""
            raise ConfigError(f"{site}: {where}{err}") from None
        if not data.train:
            raise ConfigError(f"{site}: no training records in {data.source}")
        base_dir = resolve_site_dir(self.base_model_dir, fl_ctx) if self.base_model_dir else None
        trainer = self.make_trainer(spec, base_dir)
        try:
            train, test = trainer.encode(data.train), trainer.encode(data.test)
        except FlaretuneError as err:  # e.g. tags outside the job's label set: name the site and its data
            raise ConfigError(f"{site}: {data.source}: {err}") from None
        # kept only once the site's data fits: a refused site is refused again next round, not half set up
        self._trainer, self._train, self._test = trainer, train, test
        if self.train_step == "dpsgd":
            from flaretune.privacy.site import SiteDP

            root = fl_ctx.get_engine().get_workspace().get_root_dir()
            self._dp = SiteDP(self._settings, len(self._train), root, self.dp_epsilon_budget, self.dp_delta,
                              self.dp_accountant)
        engine = fl_ctx.get_engine()
        self._writer = engine.get_component(self.tracking_writer_id) if engine and self.tracking_writer_id else None
        self.log_info(
            fl_ctx,
            f"{site}: {len(data.train)} train / {len(data.test)} test records from {data.source}; "
            f"base model {spec.model_name} from {base_dir or 'its package'}; "
            f"{self._trainer.trainable_count():,} trainable parameters",
        )

    # -- FLARE entry point ----------------------------------------------------------------------
    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        received_at = time.time()  # the task's data has passed the site's task filters
        if task_name not in (self.train_task_name, self.validate_task_name, self.submit_model_task_name):
            self.log_error(fl_ctx, f"unknown task {task_name!r}")
            return make_reply(ReturnCode.TASK_UNKNOWN)
        try:
            incoming = FLModelUtils.from_shareable(shareable)
            spec = (incoming.meta or {}).get(keys.MODEL_SPEC)
            if spec is None:
                self.log_error(fl_ctx, f"task {task_name!r} carries no '{keys.MODEL_SPEC}': use PeftAdapterPersistor")
                return make_reply(ReturnCode.BAD_TASK_DATA)
            self._prepare(spec, fl_ctx)
            if abort_signal.triggered:
                return make_reply(ReturnCode.TASK_ABORTED)
            if task_name == self.train_task_name:
                return self._do_train(incoming, fl_ctx, abort_signal, received_at)
            if task_name == self.validate_task_name:
                self._trainer.set_params(incoming.params)
                metrics = self.flat_metrics(self._trainer.evaluate(self._test))
                name, value = headline(metrics, self.headlines)
                self.log_info(fl_ctx, f"validation of the received model: {name}={value:.4f}")
                return FLModelUtils.to_shareable(FLModel(metrics=metrics, meta={keys.NUM_EXAMPLES: len(self._test)}))
            params = self._local_params if self._local_params is not None else incoming.params
            return FLModelUtils.to_shareable(FLModel(params_type=ParamsType.FULL, params=params))
        except FlaretuneError as err:
            self.log_error(fl_ctx, f"{task_name}: {err}")
            reply = make_reply(ReturnCode.EXECUTION_EXCEPTION)
            reply.set_header(SITE_ERROR_HEADER, str(err))
            return reply

    def _do_train(self, incoming: FLModel, fl_ctx: FLContext, abort_signal: Signal, received_at: float) -> Shareable:
        round_number = incoming.current_round or 0
        global_params = {k: np.asarray(v, dtype=np.float32) for k, v in incoming.params.items()}
        refusal = self._dp.refusal() if self._dp else None
        if refusal:  # declined: the server goes on without this site if min_clients allows
            self.log_error(fl_ctx, f"{fl_ctx.get_identity_name()} declines round {round_number}: {refusal}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)
        outcome = local_round(
            self._trainer, self._train, self._test, self._settings, seed=self.seed + round_number,
            global_params=global_params, fedprox_mu=float((incoming.meta or {}).get(keys.FEDPROX_MU, 0.0)),
            should_stop=lambda: abort_signal.triggered, round_index=round_number,
            num_rounds=int(incoming.total_rounds or 1),
        )
        if outcome.result.aborted:
            self.log_info(fl_ctx, f"round {round_number}: aborted after {outcome.result.steps} steps")
            return make_reply(ReturnCode.TASK_ABORTED)
        local = {k: v.numpy() for k, v in self._trainer.get_params().items()}
        self._local_params = local
        metrics = {**self.flat_metrics(outcome.before, prefix="global_"),
                   **self.flat_metrics(outcome.after, prefix="local_"), "train_loss": outcome.result.mean_loss,
                   PEAK_RSS_MB: peak_rss_mb(),
                   "seconds_per_step": outcome.seconds / max(1, outcome.result.steps),  # local training only
                   **outcome.timing(received_at)}
        if self._dp:
            metrics["dp_epsilon"] = self._dp.spend(outcome.result.steps)
            self.log_info(fl_ctx, f"{fl_ctx.get_identity_name()} round {round_number}: DP-SGD epsilon spent "
                                  f"{metrics['dp_epsilon']:.4f} of {self.dp_epsilon_budget:g} at delta {self.dp_delta:g}")
        self._track(metrics, round_number)
        params = {k: v - global_params[k] for k, v in local.items()} if self.send_diff else local
        upload = int(sum(v.nbytes for v in params.values()))
        self.log_info(fl_ctx, round_line(fl_ctx.get_identity_name(), round_number, outcome, self.headlines, upload))
        self._warn_collapse(fl_ctx, outcome.after, round_number)
        reply = FLModel(
            params_type=ParamsType.DIFF if self.send_diff else ParamsType.FULL,
            params=params,
            metrics=metrics,
            current_round=round_number,
            meta={keys.NUM_EXAMPLES: len(self._train), keys.UPLOAD_BYTES: upload,
                  MetaKey.NUM_STEPS_CURRENT_ROUND: outcome.result.steps},
        )
        return FLModelUtils.to_shareable(reply)

    def _warn_collapse(self, fl_ctx: FLContext, scores: dict, round_number: int) -> None:
        if scores.get("collapse"):
            self.log_warning(fl_ctx, f"{fl_ctx.get_identity_name()} round {round_number}: {scores['collapse']}")

    def _track(self, metrics: dict, round_number: int) -> None:
        if self._writer is None:
            return
        for name, value in metrics.items():
            if name in TIMESTAMPS:
                continue
            self._writer.add_scalar(name, float(value), global_step=round_number)
