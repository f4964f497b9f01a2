"""FLARE Executor for LoRA token classification: :class:`PeftExecutor` over :class:`NerTrainer`.

The ``train`` result carries the LoRA matrices and the token-classification head; scores are strict
entity precision/recall/F1 (seqeval), overall and per entity type.
"""

from typing import Optional

from flaretune.executors.base import PeftExecutor


def _flat_metrics(scores: dict, prefix: str = "") -> dict:
    """seqeval scores → flat floats FLARE can carry and TensorBoard can plot."""
    flat = {f"{prefix}precision": scores["precision"], f"{prefix}recall": scores["recall"], f"{prefix}f1": scores["f1"]}
    for entity_type, values in scores["per_type"].items():
        flat[f"{prefix}f1_{entity_type}"] = values["f1"]
    return flat


class PeftTrainExecutor(PeftExecutor):
    """Clinical NER sites: CoNLL files or the synthetic hospital (``synthetic_*`` arguments)."""

    headlines = ("f1",)

    def __init__(
        self,
        data_path: str = "",
        local_epochs: float = 1.0,
        max_steps: int = 0,
        learning_rate: float = 1e-3,
        batch_size: int = 16,
        max_length: int = 64,
        seed: int = 0,
        send_diff: bool = False,
        synthetic_sites: int = 3,
        synthetic_skew: float = 0.8,
        synthetic_train_size: int = 0,
        num_threads: int = 0,
        warmup_ratio: float = 0.0,
        lr_schedule: str = "constant",
        train_step: str = "backprop",
        train_step_args: Optional[dict] = None,
        dp_epsilon_budget: float = 0.0,
        dp_delta: float = 1e-5,
        dp_accountant: str = "rdp",
        train_task_name: str = "train",
        validate_task_name: str = "validate",
        submit_model_task_name: str = "submit_model",
        tracking_writer_id: str = "tb_writer",
        base_model_dir: str = "",
        method: str = "",
    ):
        super().__init__(
            data_path=data_path, local_epochs=local_epochs, max_steps=max_steps, learning_rate=learning_rate,
            batch_size=batch_size, max_length=max_length, seed=seed, send_diff=send_diff, num_threads=num_threads,
            warmup_ratio=warmup_ratio, lr_schedule=lr_schedule, train_step=train_step,
            train_step_args=train_step_args, dp_epsilon_budget=dp_epsilon_budget, dp_delta=dp_delta,
            dp_accountant=dp_accountant,
            train_task_name=train_task_name, validate_task_name=validate_task_name,
            submit_model_task_name=submit_model_task_name, tracking_writer_id=tracking_writer_id,
            base_model_dir=base_model_dir, method=method,
        )
        self.synthetic_sites = synthetic_sites
        self.synthetic_skew = synthetic_skew
        self.synthetic_train_size = synthetic_train_size

    def load_data(self, site_name: str):
        from flaretune.data.site import load_site_ner_data

        return load_site_ner_data(
            site_name, self.data_path, seed=self.seed, synthetic_sites=self.synthetic_sites,
            synthetic_skew=self.synthetic_skew, synthetic_train_size=self.synthetic_train_size,
        )

    def make_trainer(self, spec, base_dir=None):
        from flaretune.train.ner_trainer import NerTrainer

        return NerTrainer(spec, max_length=self.max_length, num_threads=self.num_threads, base_dir=base_dir)

    def flat_metrics(self, scores: dict, prefix: str = "") -> dict:
        return _flat_metrics(scores, prefix)
