"""A LoRA token-classification trainer: one PEFT model, its tokenizer and encoded data.

Used by the FLARE executor (one per site) and by ``flaretune compare`` for the centralized and
local-only baselines, so all three train with exactly the same code.
"""

from typing import Callable, Dict, Optional, Sequence

from flaretune.models.lora import PeftSpec, adapter_state, load_adapter_state
from flaretune.train import ner


class NerTrainer:
    def __init__(self, spec: PeftSpec, max_length: int = 64, num_threads: int = 0):
        import torch

        from flaretune.models.base import load_tokenizer

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.spec = spec
        self.max_length = max_length
        self.model = spec.build()
        self.tokenizer = load_tokenizer(spec.model_name)
        self.label2id = {label: i for i, label in enumerate(spec.labels)}
        self.id2label = {i: label for i, label in enumerate(spec.labels)}
        self.pad_id = self.tokenizer.pad_token_id or 0

    def encode(self, sentences: Sequence) -> list:
        unknown = {tag for s in sentences for tag in s.tags} - set(self.label2id)
        if unknown:
            from flaretune.errors import ConfigError

            raise ConfigError(
                f"data has tags {sorted(unknown)} that the job's label set {self.spec.labels} lacks; "
                "add them to the persistor's 'labels'"
            )
        return ner.encode(sentences, self.tokenizer, self.label2id, self.max_length)

    def get_params(self) -> Dict[str, "object"]:
        return adapter_state(self.model)

    def set_params(self, params: Dict[str, "object"]) -> None:
        load_adapter_state(self.model, params)

    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

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
    ) -> ner.TrainResult:
        proximal = self._proximal_term(fedprox_mu) if fedprox_mu > 0 else None
        return ner.train(
            self.model, encoded, self.pad_id, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
            seed=seed, max_steps=max_steps, proximal=proximal, should_stop=should_stop, on_step=on_step,
        )

    def _proximal_term(self, mu: float):
        """FedProx (Li et al., 2020): (mu/2)·||w − w_global||² over the trainable tensors."""
        anchors = [(p, p.detach().clone()) for p in self.model.parameters() if p.requires_grad]

        def term():
            return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in anchors)

        return term

    def evaluate(self, encoded: Sequence) -> Dict[str, object]:
        return ner.evaluate(self.model, encoded, self.id2label, self.pad_id)
