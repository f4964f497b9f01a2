"""What every flaretune LoRA trainer shares: the PEFT model, its adapter tensors and the training loop.

Subclasses (``NerTrainer``, ``InstructTrainer``) add encoding and evaluation for their task.
"""

from typing import Callable, Dict, Optional, Sequence

from flaretune.models.lora import PeftSpec, adapter_state, load_adapter_state
from flaretune.train import ner


class LoraTrainer:
    def __init__(self, spec: PeftSpec, num_threads: int = 0, base_dir=None):
        import torch

        from flaretune.models.base import load_tokenizer

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.spec = spec
        self.base_dir = base_dir  # a pushed model folder to start from, else the named package model
        self.model = spec.build(base_dir)
        self.tokenizer = load_tokenizer(spec.model_name, base_dir)
        self.pad_id = self.tokenizer.pad_token_id or 0

    def training_module(self):
        """The module whose forward returns ``.loss`` for a batch (the model itself by default)."""
        return self.model

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
            self.training_module(), encoded, self.pad_id, epochs=epochs, learning_rate=learning_rate,
            batch_size=batch_size, seed=seed, max_steps=max_steps, proximal=proximal, should_stop=should_stop,
            on_step=on_step,
        )

    def _proximal_term(self, mu: float):
        """FedProx (Li et al., 2020): (mu/2)·||w − w_global||² over the trainable tensors."""
        anchors = [(p, p.detach().clone()) for p in self.model.parameters() if p.requires_grad]
        return lambda: 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in anchors)
