"""Token-classification trainers: LoRA (``NerTrainer``) and every weight (``FullNerTrainer``, in full_trainer.py).

Both share :class:`NerTask` for encoding and strict entity-level evaluation, and the executors,
``flaretune compare`` and the tests drive them through the same :class:`~flaretune.train.protocol.Trainer`
interface, so federated, centralized and local-only runs train with exactly the same code.
"""

from typing import Dict, Sequence

from flaretune.errors import ConfigError
from flaretune.models.lora import PeftSpec
from flaretune.train import ner
from flaretune.train.lora_trainer import LoraTrainer


class NerTask:
    """Encoding (labels on first sub-tokens) and entity F1 for a model with ``tokenizer``, ``model``, ``pad_id``."""

    labels: Sequence[str] = ()
    max_length = 64

    def _set_labels(self, labels: Sequence[str], max_length: int) -> None:
        self.labels = list(labels)
        self.max_length = max_length
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        self.id2label = {i: label for i, label in enumerate(self.labels)}

    def encode(self, sentences: Sequence) -> list:
        unknown = {tag for s in sentences for tag in s.tags} - set(self.label2id)
        if unknown:
            raise ConfigError(
                f"data has tags {sorted(unknown)} that the job's label set {self.labels} lacks; "
                "add them to the persistor's 'labels'"
            )
        return ner.encode(sentences, self.tokenizer, self.label2id, self.max_length)

    def evaluate(self, encoded: Sequence) -> Dict[str, object]:
        return ner.evaluate(self.model, encoded, self.id2label, self.pad_id)


class NerTrainer(NerTask, LoraTrainer):
    def __init__(self, spec: PeftSpec, max_length: int = 64, num_threads: int = 0, base_dir=None, model=None):
        super().__init__(spec, num_threads=num_threads, base_dir=base_dir, model=model)
        self._set_labels(spec.labels, max_length)
