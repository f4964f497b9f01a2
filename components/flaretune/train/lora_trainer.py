"""What every flaretune trainer shares (model, tokenizer, the one training loop), and the LoRA trainer.

Subclasses add encoding and evaluation for their task (``NerTrainer``, ``InstructTrainer``) or train
every weight (``FullNerTrainer``). All of them satisfy :class:`flaretune.train.protocol.Trainer`.
"""

from typing import Callable, Dict, Optional, Sequence

from flaretune.models.lora import PeftSpec
from flaretune.train import loop


def set_threads(num_threads: int) -> None:
    if num_threads > 0:
        import torch

        torch.set_num_threads(num_threads)


class ModelTrainer:
    """A model and its tokenizer; :meth:`fit` runs :func:`flaretune.train.loop.run` with a pluggable step."""

    model = None
    tokenizer = None
    pad_id = 0

    def training_module(self):
        """The module whose forward returns ``.loss`` for a batch (the model itself by default)."""
        return self.model

    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def method_step(self, step: loop.TrainStep) -> loop.TrainStep:
        """The step :meth:`fit` trains with, given the job's; a client method may replace it."""
        return step

    def fit(
        self,
        encoded: Sequence,
        epochs: float = 1.0,
        learning_rate: float = 1e-3,
        batch_size: int = 16,
        seed: int = 0,
        max_steps: int = 0,
        fedprox_mu: float = 0.0,
        should_stop: Callable[[], bool] = lambda: False,
        on_step: Optional[Callable[[int, float], None]] = None,
        step: Optional[loop.TrainStep] = None,
        warmup_ratio: float = 0.0,
        schedule: str = "constant",
    ) -> loop.TrainResult:
        if step is None:
            step = loop.step_for(loop.BackpropStep.name, fedprox_mu, learning_rate=learning_rate,
                                 warmup_ratio=warmup_ratio, schedule=schedule)
        step = self.method_step(step)
        return loop.run(
            self.training_module(), encoded, self.pad_id, step, epochs=epochs, batch_size=batch_size, seed=seed,
            max_steps=max_steps, should_stop=should_stop, on_step=on_step,
        )


class LoraTrainer(ModelTrainer):
    """A model built by the job's client method (:mod:`flaretune.train.methods`, ``spec.method``; default
    ``lora``: a PEFT model whose adapter and head tensors alone travel). The method decides what trains, what
    travels and may replace the train step."""

    def __init__(self, spec: PeftSpec, num_threads: int = 0, base_dir=None, model=None):
        """``model``: an already built model of ``spec`` (e.g. ``PeftModel.from_pretrained``), else built here."""
        from flaretune.models.base import load_tokenizer
        from flaretune.train.methods import method_for

        set_threads(num_threads)
        self.spec = spec
        self.method = method_for(spec)
        self.base_dir = base_dir  # a pushed model folder to start from, else the named package model
        self.model = model if model is not None else self.method.build(base_dir)
        self.tokenizer = load_tokenizer(spec.model_name, base_dir)
        self.pad_id = self.tokenizer.pad_token_id or 0

    def get_params(self) -> Dict[str, "object"]:
        return self.method.get_params(self.model)

    def set_params(self, params: Dict[str, "object"]) -> None:
        self.method.set_params(self.model, params)

    def method_step(self, step: loop.TrainStep) -> loop.TrainStep:
        return self.method.step(step)
