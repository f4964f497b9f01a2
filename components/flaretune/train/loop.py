"""The one local training loop every flaretune trainer runs, with a pluggable per-batch step.

The loop owns batching, step counting, abort checks and progress; a :class:`TrainStep` turns one
batch into one parameter update. Today's steps: plain backprop (AdamW) and backprop with the FedProx
proximal term. Further client methods (DP-SGD, forward-only gradient estimates, layer selection) are
further steps registered by name, so an executor's JSON picks one with ``"train_step": "..."``.
"""

import math
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Type

from flaretune.errors import ConfigError

IGNORE_INDEX = -100
SCHEDULES = ("constant", "linear")


def batches(encoded: Sequence, batch_size: int, pad_id: int, shuffle: bool = False, seed: int = 0):
    """Yield right-padded ``(input_ids, attention_mask, labels)`` tensors of records with ``input_ids``/``labels``."""
    import torch

    order = list(range(len(encoded)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        chunk = [encoded[i] for i in order[start : start + batch_size]]
        width = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for row, e in enumerate(chunk):
            n = len(e.input_ids)
            ids[row, :n] = torch.tensor(e.input_ids)
            mask[row, :n] = 1
            labels[row, :n] = torch.tensor(e.labels)
        yield ids, mask, labels


@dataclass
class TrainResult:
    steps: int
    examples: int
    mean_loss: float
    aborted: bool = False
    losses: Optional[List[float]] = None  # per step, for diagnosis (a plateau without learning)


def lr_factor(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at step ``s`` (0-based): linear warm-up, then constant or linear decay."""

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / (warmup_steps + 1)
        if schedule == "linear":
            remaining = total_steps - warmup_steps
            return max(0.0, (total_steps - s) / max(1, remaining))
        return 1.0

    return factor


class TrainStep:
    """One batch → one update. ``start`` is called once per :func:`run` with the trainable parameters."""

    name = "base"

    def start(self, module, params: List, total_steps: int) -> None:
        raise NotImplementedError

    def __call__(self, module, batch) -> float:
        raise NotImplementedError


class BackpropStep(TrainStep):
    """AdamW (Loshchilov & Hutter, 2019, arXiv:1711.05101) on the loss the module returns.

    A fresh optimizer per call of :func:`run` (i.e. per federated round): Adam's moments describe the
    site's local objective, which the next global model changes. The learning-rate schedule spans the
    whole job (``round_index`` of ``num_rounds``): ``warmup_ratio`` of all steps ramp it up linearly from
    the first step, so Adam's first, uncalibrated steps stay small while the fresh head still predicts
    noise; ``"linear"`` then decays it to 0 at the end of the last round. A constant 5e-3 without warm-up
    pushed the head to "everything is O" on imbalanced data and stayed there (see docs/ner_recipe.md).
    """

    name = "backprop"

    def __init__(self, learning_rate: float = 1e-3, weight_decay: float = 0.0, warmup_ratio: float = 0.0,
                 schedule: str = "constant", max_grad_norm: float = 0.0, round_index: int = 0, num_rounds: int = 1):
        if not learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {learning_rate}")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        if schedule not in SCHEDULES:
            raise ConfigError(f"Invalid lr schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.schedule = schedule
        self.max_grad_norm = max_grad_norm
        if not 0 <= round_index < max(1, num_rounds):
            raise ConfigError(f"round_index must be in [0, num_rounds), got {round_index} of {num_rounds}")
        self.round_index = round_index
        self.num_rounds = max(1, num_rounds)
        self.optimizer = self.scheduler = None
        self.params: List = []

    def start(self, module, params, total_steps):
        import torch

        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        # the schedule spans every round of the job, as one centralized run of the same epochs would:
        # warm-up at the start of round 0, decay to 0 at the end of the last round
        span, offset = total_steps * self.num_rounds, total_steps * self.round_index
        factor = lr_factor(self.schedule, int(round(self.warmup_ratio * span)), span)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: factor(offset + s))

    def extra_loss(self):
        """A term added to the module's loss (FedProx's proximal term); none here."""
        return None

    def __call__(self, module, batch) -> float:
        import torch

        ids, mask, labels = batch
        loss = module(input_ids=ids, attention_mask=mask, labels=labels).loss
        extra = self.extra_loss()
        if extra is not None:
            loss = loss + extra
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())


class FedProxStep(BackpropStep):
    """FedProx (Li et al., 2020, arXiv:1812.06127): backprop on loss + (mu/2)·||w − w_global||².

    ``w_global`` is the trainable parameters as they are when the round's training starts.
    """

    name = "fedprox"

    def __init__(self, mu: float = 0.01, **kwargs):
        if not mu > 0:
            raise ConfigError(f"fedprox mu must be > 0, got {mu}")
        super().__init__(**kwargs)
        self.mu = mu
        self._anchors = []

    def start(self, module, params, total_steps):
        super().start(module, params, total_steps)
        self._anchors = [(p, p.detach().clone()) for p in params]

    def extra_loss(self):
        return 0.5 * self.mu * sum(((p - a) ** 2).sum() for p, a in self._anchors)


STEPS: Dict[str, Type[TrainStep]] = {}


def register_step(name: str, cls: Type[TrainStep]) -> None:
    STEPS[name] = cls


def make_step(name: str, **kwargs) -> TrainStep:
    if name not in STEPS:
        raise ConfigError(f"Invalid train_step {name!r}; valid: {', '.join(STEPS)}")
    return STEPS[name](**kwargs)


register_step(BackpropStep.name, BackpropStep)
register_step(FedProxStep.name, FedProxStep)


def step_for(name: str, fedprox_mu: float = 0.0, **args) -> TrainStep:
    """The registered step ``name``; a server FedProx ``mu`` > 0 turns plain backprop into FedProx."""
    if fedprox_mu > 0 and name == BackpropStep.name:
        name, args = FedProxStep.name, {"mu": fedprox_mu, **args}
    return make_step(name, **args)


def total_steps(n_records: int, batch_size: int, epochs: float, max_steps: int = 0) -> int:
    return max_steps if max_steps > 0 else max(1, round(epochs * math.ceil(n_records / batch_size)))


def run(
    module,
    encoded: Sequence,
    pad_id: int,
    step: TrainStep,
    epochs: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    max_steps: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
    on_step: Optional[Callable[[int, float], None]] = None,
) -> TrainResult:
    """``epochs`` passes over ``encoded`` (or ``max_steps`` steps when > 0), shuffled per epoch from ``seed``.

    ``should_stop`` is checked before every step, so a FLARE abort takes effect within one step.
    """
    import torch

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    torch.manual_seed(seed)
    total = total_steps(len(encoded), batch_size, epochs, max_steps)
    step.start(module, [p for p in module.parameters() if p.requires_grad], total)
    module.train()
    done, examples, losses, epoch = 0, 0, [], 0
    while done < total:
        for batch in batches(encoded, batch_size, pad_id, shuffle=True, seed=seed + epoch):
            if done >= total:
                break
            if should_stop():
                return TrainResult(done, examples, sum(losses) / max(done, 1), aborted=True, losses=losses)
            loss = step(module, batch)
            done += 1
            examples += batch[0].shape[0]
            losses.append(loss)
            if on_step is not None:
                on_step(done, loss)
        epoch += 1
    return TrainResult(done, examples, sum(losses) / max(done, 1), losses=losses)


# steps defined in their own modules register themselves on import; a job names them in its JSON
from flaretune.train import dp_sgd  # noqa: E402,F401  (DP-SGD, "dpsgd")
from flaretune.train import forward_only  # noqa: E402,F401  (FwdLLM's forward-only step, "forward_only")
