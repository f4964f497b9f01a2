"""A LoRA token-classification trainer: one PEFT model, its tokenizer and encoded data.

Used by the FLARE executor (one per site) and by ``flaretune compare`` for the centralized and
local-only baselines, so all three train with exactly the same code.
"""

from typing import Dict, Sequence

from flaretune.errors import ConfigError
from flaretune.models.lora import PeftSpec
from flaretune.train import ner
from flaretune.train.lora_trainer import LoraTrainer


class NerTrainer(LoraTrainer):
    def __init__(self, spec: PeftSpec, max_length: int = 64, num_threads: int = 0, base_dir=None):
        super().__init__(spec, num_threads=num_threads, base_dir=base_dir)
        self.max_length = max_length
        self.label2id = {label: i for i, label in enumerate(spec.labels)}
        self.id2label = {i: label for i, label in enumerate(spec.labels)}

    def encode(self, sentences: Sequence) -> list:
        unknown = {tag for s in sentences for tag in s.tags} - set(self.label2id)
        if unknown:
            raise ConfigError(
                f"data has tags {sorted(unknown)} that the job's label set {self.spec.labels} lacks; "
                "add them to the persistor's 'labels'"
            )
        return ner.encode(sentences, self.tokenizer, self.label2id, self.max_length)

    def evaluate(self, encoded: Sequence) -> Dict[str, object]:
        return ner.evaluate(self.model, encoded, self.id2label, self.pad_id)
