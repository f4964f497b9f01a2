"""Full fine-tuning of a token classifier loaded from a Hugging Face folder (every weight trains and travels).

Used by :class:`flaretune.executors.full_train.FullModelTrainExecutor` on the folders that
:class:`flaretune.streaming.fedavg.StreamedFedAvg` pushes; the label set is the folder's ``id2label``.
"""

from pathlib import Path
from typing import Dict

from flaretune.train.lora_trainer import ModelTrainer, set_threads
from flaretune.train.ner_trainer import NerTask


class FullNerTrainer(NerTask, ModelTrainer):
    def __init__(self, model_dir, max_length: int = 64, num_threads: int = 0):
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        set_threads(num_threads)
        self.model_dir = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForTokenClassification.from_pretrained(str(model_dir), dtype=torch.float32)
        self.pad_id = self.tokenizer.pad_token_id or 0
        id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        self._set_labels([id2label[i] for i in range(len(id2label))], max_length)

    def get_params(self) -> Dict[str, "object"]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def set_params(self, params: Dict[str, "object"]) -> None:
        import torch

        self.model.load_state_dict({k: torch.as_tensor(v) for k, v in params.items()}, strict=True)

    def save(self, out_dir) -> Path:
        """The trained model as a Hugging Face folder (safetensors, config, tokenizer)."""
        out = Path(out_dir)
        self.model.save_pretrained(str(out), safe_serialization=True)
        self.tokenizer.save_pretrained(str(out))
        return out
