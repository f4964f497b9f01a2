"""The FLARE glue every flaretune LoRA executor shares; subclasses add a trainer and site data.

Tasks: ``train`` (evaluate the received global adapter, train locally, return the trainable tensors),
``validate`` (score the received adapter on the site's test split), ``submit_model`` (return the
site's last local adapter). Only trainable tensors leave the site; the frozen base never does.

A subclass supplies four things: :meth:`load_data` (the site's ``SiteData``), :meth:`make_trainer`
(an object with ``NerTrainer``'s interface), :meth:`flat_metrics` (the trainer's scores as flat
floats) and :attr:`headlines` (the metrics the log line names, first one present wins).
"""

import time

import numpy as np

from nvflare.apis.dxo import MetaKey
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from flaretune.aggregation.controller import FEDPROX_MU_KEY, NUM_EXAMPLES_KEY
from flaretune.aggregation.persistor import SPEC_META_KEY
from flaretune.errors import ConfigError, FlaretuneError
from flaretune.models.lora import PeftSpec
from flaretune.streaming.receiver import resolve_site_dir

UPLOAD_BYTES_KEY = "upload_param_bytes"


class PeftExecutor(Executor):
    """Base class: task dispatch, spec handling, global/local evaluation, full or diff results, abort, tracking.

    ``base_model_dir`` (optional): start from a model folder at the site instead of the named package
    model — relative to the site's workspace root, ``{site_name}`` replaced — e.g. ``models/base``, where a
    ``model_push`` workflow that runs before training delivers it.
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
        train_task_name: str = "train",
        validate_task_name: str = "validate",
        submit_model_task_name: str = "submit_model",
        tracking_writer_id: str = "tb_writer",
        base_model_dir: str = "",
    ):
        super().__init__()
        # FLARE's job exporter reads each constructor argument back from self.<name>
        self.base_model_dir = base_model_dir
        self.data_path = data_path
        self.local_epochs = local_epochs
        self.max_steps = max_steps
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed = seed
        self.send_diff = send_diff
        self.num_threads = num_threads
        self.train_task_name = train_task_name
        self.validate_task_name = validate_task_name
        self.submit_model_task_name = submit_model_task_name
        self.tracking_writer_id = tracking_writer_id
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
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
        if self._trainer is not None and self._trainer.spec == spec:
            return
        site = fl_ctx.get_identity_name()
        data = self.load_data(site)
        if not data.train:
            raise ConfigError(f"{site}: no training records in {data.source}")
        base_dir = resolve_site_dir(self.base_model_dir, fl_ctx) if self.base_model_dir else None
        self._trainer = self.make_trainer(spec, base_dir)
        self._train = self._trainer.encode(data.train)
        self._test = self._trainer.encode(data.test)
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
        if task_name not in (self.train_task_name, self.validate_task_name, self.submit_model_task_name):
            self.log_error(fl_ctx, f"unknown task {task_name!r}")
            return make_reply(ReturnCode.TASK_UNKNOWN)
        try:
            incoming = FLModelUtils.from_shareable(shareable)
            spec = (incoming.meta or {}).get(SPEC_META_KEY)
            if spec is None:
                self.log_error(fl_ctx, f"task {task_name!r} carries no '{SPEC_META_KEY}': use PeftAdapterPersistor")
                return make_reply(ReturnCode.BAD_TASK_DATA)
            self._prepare(spec, fl_ctx)
            if abort_signal.triggered:
                return make_reply(ReturnCode.TASK_ABORTED)
            if task_name == self.train_task_name:
                return self._do_train(incoming, fl_ctx, abort_signal)
            if task_name == self.validate_task_name:
                self._trainer.set_params(incoming.params)
                metrics = self.flat_metrics(self._trainer.evaluate(self._test))
                self.log_info(fl_ctx, "validation of the received model: {}={:.4f}".format(*self._headline(metrics)))
                return FLModelUtils.to_shareable(FLModel(metrics=metrics, meta={NUM_EXAMPLES_KEY: len(self._test)}))
            params = self._local_params if self._local_params is not None else incoming.params
            return FLModelUtils.to_shareable(FLModel(params_type=ParamsType.FULL, params=params))
        except FlaretuneError as err:
            self.log_error(fl_ctx, f"{task_name}: {err}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)

    def _do_train(self, incoming: FLModel, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        round_number = incoming.current_round or 0
        global_params = {k: np.asarray(v, dtype=np.float32) for k, v in incoming.params.items()}
        self._trainer.set_params(global_params)
        global_metrics = self.flat_metrics(self._trainer.evaluate(self._test), prefix="global_")
        started = time.time()
        result = self._trainer.fit(
            self._train, epochs=self.local_epochs, learning_rate=self.learning_rate, batch_size=self.batch_size,
            seed=self.seed + round_number, max_steps=self.max_steps,
            fedprox_mu=float((incoming.meta or {}).get(FEDPROX_MU_KEY, 0.0)),
            should_stop=lambda: abort_signal.triggered,
        )
        if result.aborted:
            self.log_info(fl_ctx, f"round {round_number}: aborted after {result.steps} steps")
            return make_reply(ReturnCode.TASK_ABORTED)
        local = {k: v.numpy() for k, v in self._trainer.get_params().items()}
        self._local_params = local
        local_metrics = self.flat_metrics(self._trainer.evaluate(self._test), prefix="local_")
        metrics = {**global_metrics, **local_metrics, "train_loss": result.mean_loss}
        self._track(metrics, round_number)
        params = {k: v - global_params[k] for k, v in local.items()} if self.send_diff else local
        upload = int(sum(v.nbytes for v in params.values()))
        (name, before), (_, after) = self._headline(global_metrics, "global_"), self._headline(local_metrics, "local_")
        self.log_info(
            fl_ctx,
            f"{fl_ctx.get_identity_name()} round {round_number}: {result.steps} steps in {time.time() - started:.1f}s, "
            f"loss {result.mean_loss:.4f}, "
            f"global {name} {before:.4f} -> local {name} {after:.4f}, upload {upload:,} bytes",
        )
        reply = FLModel(
            params_type=ParamsType.DIFF if self.send_diff else ParamsType.FULL,
            params=params,
            metrics=metrics,
            current_round=round_number,
            meta={NUM_EXAMPLES_KEY: len(self._train), UPLOAD_BYTES_KEY: upload,
                  MetaKey.NUM_STEPS_CURRENT_ROUND: result.steps},
        )
        return FLModelUtils.to_shareable(reply)

    def _headline(self, metrics: dict, prefix: str = ""):
        name = next((n for n in self.headlines if prefix + n in metrics), self.headlines[0])
        return name, float(metrics.get(prefix + name, float("nan")))

    def _track(self, metrics: dict, round_number: int) -> None:
        if self._writer is None:
            return
        for name, value in metrics.items():
            self._writer.add_scalar(name, float(value), global_step=round_number)
