"""One local round, the same for every executor: evaluate the received model, train, evaluate again.

No FLARE here: :class:`flaretune.executors.base.PeftExecutor` (adapters) and
:class:`flaretune.executors.full_train.FullModelTrainExecutor` (whole models) both call
:func:`local_round` and :func:`round_line`, and differ only in how the model arrives and leaves.
"""

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence

from flaretune.errors import ConfigError
from flaretune.train.loop import SCHEDULES, STEPS, TrainResult, step_for
from flaretune.train.protocol import Trainer

# wall-clock timestamps among a train result's metrics (not scores: never sent to a tracking writer)
TASK_RECEIVED_AT, WORK_STARTED_AT, WORK_ENDED_AT = "task_received_at", "work_started_at", "work_ended_at"
TIMESTAMPS = (TASK_RECEIVED_AT, WORK_STARTED_AT, WORK_ENDED_AT)


@dataclass
class LocalTraining:
    """The local-training settings an executor's JSON carries."""

    epochs: float = 1.0
    max_steps: int = 0
    learning_rate: float = 1e-3
    batch_size: int = 16
    warmup_ratio: float = 0.0
    schedule: str = "constant"
    train_step: str = "backprop"
    step_args: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ConfigError(f"learning_rate must be a number > 0, got {lr!r}")
        if self.train_step not in STEPS:
            raise ConfigError(f"Invalid train_step {self.train_step!r}; valid: {', '.join(STEPS)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.epochs > 0 and self.max_steps < 1:
            raise ConfigError(f"local_epochs must be > 0 (or max_steps >= 1), got {self.epochs}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"Invalid lr schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")

    def step(self, fedprox_mu: float = 0.0, round_index: int = 0, num_rounds: int = 1):
        """The round's train step; the server's FedProx ``mu`` turns plain backprop into FedProx. The
        learning-rate schedule spans all ``num_rounds`` rounds (see :class:`~flaretune.train.loop.BackpropStep`)."""
        return step_for(self.train_step, fedprox_mu, learning_rate=self.learning_rate, warmup_ratio=self.warmup_ratio,
                        schedule=self.schedule, round_index=round_index, num_rounds=num_rounds, **self.step_args)


@dataclass
class RoundOutcome:
    before: Dict[str, object]  # scores of the received model on the site's test split
    after: Dict[str, object]  # scores after local training
    result: TrainResult
    seconds: float  # local training only
    started_at: float = 0.0  # wall clock (time.time()) before the first evaluation ...
    ended_at: float = 0.0  # ... and after the last: the site's own work this round

    def timing(self, received_at: float) -> Dict[str, float]:
        """The metrics that let the server split a round's wall time (:mod:`flaretune.bench.overhead`):
        when the task reached the executor and when the site's evaluation and training began and ended."""
        return {TASK_RECEIVED_AT: received_at, WORK_STARTED_AT: self.started_at, WORK_ENDED_AT: self.ended_at,
                "work_seconds": self.ended_at - self.started_at}


def local_round(
    trainer: Trainer,
    train: Sequence,
    test: Sequence,
    settings: LocalTraining,
    seed: int,
    global_params: Optional[Dict[str, object]] = None,
    fedprox_mu: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
    round_index: int = 0,
    num_rounds: int = 1,
) -> RoundOutcome:
    """``global_params`` (when given) are loaded first; the trainer already holds the model otherwise."""
    if global_params is not None:
        trainer.set_params(global_params)
    work_started = time.time()
    before = trainer.evaluate(test)
    started = time.time()
    result = trainer.fit(
        train, epochs=settings.epochs, batch_size=settings.batch_size, seed=seed, max_steps=settings.max_steps,
        should_stop=should_stop,
        step=settings.step(fedprox_mu, min(round_index, max(num_rounds, 1) - 1), num_rounds),
    )
    seconds = time.time() - started
    after = trainer.evaluate(test) if not result.aborted else {}
    return RoundOutcome(before, after, result, seconds, work_started, time.time())


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def headline(scores: Dict[str, object], names: Sequence[str]):
    """``(name, value)`` of the first of ``names`` present in ``scores`` (NaN if none)."""
    name = next((n for n in names if isinstance(scores.get(n), (int, float))), names[0])
    return name, float(scores.get(name, float("nan")))


def round_line(site: str, round_number: int, outcome: RoundOutcome, names: Sequence[str], upload: int) -> str:
    """The one log line a site writes per round."""
    (name, before), (_, after) = headline(outcome.before, names), headline(outcome.after, names)
    return (
        f"{site} round {round_number}: {outcome.result.steps} steps in {outcome.seconds:.1f}s, "
        f"loss {outcome.result.mean_loss:.4f}, global {name} {before:.4f} -> local {name} {after:.4f}, "
        f"upload {upload:,} bytes"
    )
