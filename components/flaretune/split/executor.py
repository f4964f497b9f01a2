"""FLARE site side of split learning: bottom and top at the site, every batch's middle at the server.

One ``split_train`` task is one epoch over the site's training split (or ``max_steps`` batches). Per batch
the site sends its (optionally noised) lower-cut activations and the 0/1 attention mask, and later the
gradient at the upper cut, to the server over FLARE aux messages (:mod:`flaretune.split.wire`), and gets
back the upper-cut activations and the lower-cut gradient (:mod:`flaretune.split.steps` has the math).
The tokens, the labels and the loss stay at the site. The result carries the site's client parts (LoRA
matrices of its edge blocks and the head) for the server's FedAvg of them (FL-GLM, arXiv:2406.14898), the
example count, and the round's ``bytes_per_step``, ``seconds_per_step`` and ``peak_rss_mb``.

The site's copy of the model has the server's blocks freed (:func:`flaretune.split.model.drop_middle`).
When the task ends, succeeded or not, the site tells the server it left, so no middle step waits for it.
"""

import time

from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.fuel.f3.cellnet.fqcn import FQCN

from flaretune import keys
from flaretune.errors import SITE_ERROR_HEADER, FlaretuneError
from flaretune.split import wire
from flaretune.split.controller import TRAIN_TASK


class SplitStepError(FlaretuneError):
    """The server refused or did not answer a split step."""


class SplitLearningExecutor(Executor):
    def __init__(self, data_path: str = "", max_steps: int = 0, learning_rate: float = 1e-3, batch_size: int = 16,
                 max_length: int = 64, seed: int = 0, synthetic_sites: int = 3, synthetic_skew: float = 0.8,
                 synthetic_train_size: int = 0, num_threads: int = 0, step_timeout: float = 300.0,
                 train_task_name: str = TRAIN_TASK):
        super().__init__()
        self.data_path = data_path
        self.max_steps = max_steps
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed = seed
        self.synthetic_sites = synthetic_sites
        self.synthetic_skew = synthetic_skew
        self.synthetic_train_size = synthetic_train_size
        self.num_threads = num_threads
        self.step_timeout = step_timeout
        self.train_task_name = train_task_name
        self._trainer = self._train = None
        self._spec = None

    def before_step(self, step: int, fl_ctx: FLContext) -> None:
        """Called before each batch (a hook for fault tests)."""

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        if task_name != self.train_task_name:
            self.log_error(fl_ctx, f"unknown task {task_name!r}")
            return make_reply(ReturnCode.TASK_UNKNOWN)
        try:
            return self._train_round(wire.read_weights(shareable), fl_ctx, abort_signal)
        except FlaretuneError as err:
            self.log_error(fl_ctx, f"{task_name}: {err}")
            reply = make_reply(ReturnCode.EXECUTION_EXCEPTION)
            reply.set_header(SITE_ERROR_HEADER, str(err))
            return reply
        finally:
            self._send(wire.LEAVE, Shareable(), fl_ctx, timeout=10.0, check=False)

    # -- one round ------------------------------------------------------------------------------------
    def _prepare(self, data: dict, fl_ctx: FLContext) -> None:
        from flaretune.data.site import load_site_ner_data
        from flaretune.models.lora import PeftSpec
        from flaretune.split.model import drop_middle
        from flaretune.train.ner_trainer import NerTrainer

        spec = PeftSpec.from_dict(data[keys.MODEL_SPEC])
        cut = (int(data["bottom_layers"]), int(data["top_layers"]))
        if self._trainer is not None and (self._spec, self._cut) == (spec, cut):
            return
        site = fl_ctx.get_identity_name()
        records = load_site_ner_data(site, self.data_path, seed=self.seed, synthetic_sites=self.synthetic_sites,
                                     synthetic_skew=self.synthetic_skew,
                                     synthetic_train_size=self.synthetic_train_size)
        trainer = NerTrainer(spec, max_length=self.max_length, num_threads=self.num_threads)
        drop_middle(trainer.model, *cut)
        self._train = trainer.encode(records.train)
        self._trainer, self._spec, self._cut = trainer, spec, cut
        self.log_info(fl_ctx, f"{site}: {len(records.train)} train records from {records.source}; split "
                              f"{spec.model_name}, {trainer.trainable_count():,} trainable parameters at the site")

    def _train_round(self, data: dict, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        import torch

        from flaretune.models.lora import adapter_state
        from flaretune.split.model import load_part, split_token_classifier
        from flaretune.split.steps import SiteSide
        from flaretune.train.flow import peak_rss_mb
        from flaretune.train.loop import batches

        self._prepare(data, fl_ctx)
        round_number = int(data["round"])
        model = self._trainer.model
        load_part(model, data["site_params"])
        parts = split_token_classifier(model, *self._cut)
        site = SiteSide(parts.bottom, parts.top, self.learning_rate, sigma=float(data.get("sigma", 0.0)),
                        seed=self.seed + round_number)
        site.train()
        torch.manual_seed(self.seed + round_number)
        steps, examples, losses, sent, seconds = 0, 0, [], 0, 0.0
        for ids, mask, labels in batches(self._train, self.batch_size, self._trainer.pad_id, shuffle=True,
                                         seed=self.seed + round_number):
            if (self.max_steps and steps >= self.max_steps) or abort_signal.triggered:
                break
            self.before_step(steps, fl_ctx)
            started = time.perf_counter()
            up = wire.request(hidden=site.forward(ids, mask), mask=mask)
            upper = self._send(wire.FORWARD, up, fl_ctx)
            loss, upper_grad = site.top_backward(wire.read(upper, "tensor")[0], mask, labels)
            grad_up = wire.request(grad=upper_grad)
            lower = self._send(wire.BACKWARD, grad_up, fl_ctx)
            site.finish(wire.read(lower, "tensor")[0])
            seconds += time.perf_counter() - started
            sent += wire.nbytes(up) + wire.nbytes(grad_up) + wire.nbytes(upper) + wire.nbytes(lower)
            steps, examples = steps + 1, examples + ids.shape[0]
            losses.append(loss)
        if abort_signal.triggered:
            return make_reply(ReturnCode.TASK_ABORTED)
        stats = {"steps": steps, "train_loss": sum(losses) / max(1, steps), "bytes_per_step": sent / max(1, steps),
                 "seconds_per_step": seconds / max(1, steps), "peak_rss_mb": peak_rss_mb()}
        self.log_info(fl_ctx, f"{fl_ctx.get_identity_name()} round {round_number + 1}: {steps} split steps, loss "
                              f"{stats['train_loss']:.4f}, {stats['bytes_per_step'] / 1e3:.1f} kB and "
                              f"{stats['seconds_per_step']:.3f} s per step, peak RSS {stats['peak_rss_mb']:.0f} MiB")
        return wire.weights({k: v.numpy() for k, v in adapter_state(model).items()},
                            {"num_examples": len(self._train), "stats": stats})

    def _send(self, topic: str, message: Shareable, fl_ctx: FLContext, timeout: float = 0.0, check: bool = True):
        engine = fl_ctx.get_engine()
        replies = engine.send_aux_request(targets=[FQCN.ROOT_SERVER], topic=topic, request=message,
                                          timeout=timeout or self.step_timeout, fl_ctx=fl_ctx)
        reply = next(iter(replies.values()), None) if replies else None
        if not check:
            return reply
        rc = reply.get_return_code(ReturnCode.OK) if reply is not None else "no reply"
        if rc != ReturnCode.OK:
            detail = reply.get_header(SITE_ERROR_HEADER) if reply is not None else None
            raise SplitStepError(f"server refused {topic.rsplit('.', 1)[-1]} ({rc}){': ' + detail if detail else ''}")
        return reply
