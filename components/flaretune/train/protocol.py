"""What the FLARE executors, ``flaretune compare`` and the local-round flow need from a trainer.

NER (:class:`~flaretune.train.ner_trainer.NerTrainer`), instruction tuning
(:class:`~flaretune.train.causal.InstructTrainer`) and full fine-tuning
(:class:`~flaretune.train.full_trainer.FullNerTrainer`) implement it; nothing else about a trainer is
assumed by the code that drives it.
"""

from typing import Callable, Dict, Optional, Protocol, Sequence, runtime_checkable

from flaretune.train.loop import TrainResult, TrainStep


@runtime_checkable
class Trainer(Protocol):
    def encode(self, records: Sequence) -> list:
        """Tokenised records the trainer can fit on and evaluate."""

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
        step: Optional[TrainStep] = None,
        warmup_ratio: float = 0.0,
        schedule: str = "constant",
    ) -> TrainResult:
        """Local training; ``step`` (default: backprop, or FedProx when ``fedprox_mu`` > 0, with the given
        learning rate, warm-up and schedule) does each update."""

    def evaluate(self, encoded: Sequence) -> Dict[str, object]:
        """Scores on ``encoded``: a dict whose scalar entries are fractions."""

    def get_params(self) -> Dict[str, object]:
        """The tensors that travel: trainable ones (adapters, head) or, for full fine-tuning, all of them."""

    def set_params(self, params: Dict[str, object]) -> None:
        """Load tensors produced by :meth:`get_params` (or their aggregate)."""

    def trainable_count(self) -> int:
        """Number of trainable parameters."""
