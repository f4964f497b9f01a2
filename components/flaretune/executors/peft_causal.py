"""FLARE Executor for LoRA instruction tuning of a causal LM: :class:`PeftExecutor` over :class:`InstructTrainer`.

Banks train on ChatML instruction records (answer tokens only). Label-word answers are scored by
label log-likelihood (``accuracy``, ``macro_f1``, ``f1_<label>``); free-form answers by mean
answer loss and ``perplexity``. The global model of round 0 is the zero-shot base model.

``logit_adjustment`` tau > 0 trains each bank with its label words' logits offset by tau * log of its own
label shares (:class:`flaretune.train.causal.AnswerLoss`), so banks whose label mixes differ learn one
likelihood instead of pulling the adapter towards their own majority label. Under DP-SGD it is off (a
whole-dataset prior would couple the records' losses).
"""

from typing import List, Optional

from flaretune.data.finance import FIN_STYLES
from flaretune.data.types import SENTIMENT_LABELS
from flaretune.errors import ConfigError
from flaretune.executors.base import PeftExecutor

_SCALARS = ("accuracy", "macro_f1", "answer_loss", "perplexity")


def flat_causal_metrics(scores: dict, prefix: str = "") -> dict:
    """InstructTrainer scores → flat floats; per-label F1 as ``f1_<label>``."""
    flat = {f"{prefix}{name}": float(scores[name]) for name in _SCALARS if name in scores}
    for label, values in scores.get("per_label", {}).items():
        flat[f"{prefix}f1_{label}"] = float(values["f1"])
    return flat


class PeftCausalLMExecutor(PeftExecutor):
    """Bank sites: instruction JSONL / PhraseBank files, or the SYNTHETIC bank (``synthetic_*`` arguments)."""

    headlines = ("accuracy", "answer_loss")

    def __init__(
        self,
        data_path: str = "",
        local_epochs: float = 1.0,
        max_steps: int = 0,
        learning_rate: float = 1e-3,
        batch_size: int = 8,
        max_length: int = 96,
        seed: int = 0,
        send_diff: bool = False,
        system_prompt: Optional[str] = None,
        label_words: Optional[List[str]] = None,
        eval_batch_size: int = 16,
        synthetic_sites: int = 3,
        synthetic_alpha: float = 0.5,
        synthetic_train_size: int = 0,
        synthetic_test_size: int = 100,
        synthetic_style: str = "templates",
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
        logit_adjustment: float = 0.0,
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
        self.system_prompt = system_prompt
        self.label_words = label_words
        self.eval_batch_size = eval_batch_size
        self.synthetic_sites = synthetic_sites
        self.synthetic_alpha = synthetic_alpha
        self.synthetic_train_size = synthetic_train_size
        self.synthetic_test_size = synthetic_test_size
        self.synthetic_style = synthetic_style
        self.logit_adjustment = logit_adjustment
        if logit_adjustment < 0:
            raise ConfigError(f"logit_adjustment must be >= 0 (0: off), got {logit_adjustment}")
        if eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        if synthetic_alpha <= 0:
            raise ConfigError(f"synthetic_alpha must be > 0 (Dirichlet concentration), got {synthetic_alpha}")
        if synthetic_style not in FIN_STYLES:
            raise ConfigError(f"synthetic_style must be one of {', '.join(FIN_STYLES)}, got {synthetic_style!r}")

    def load_data(self, site_name: str):
        from flaretune.data.site import load_site_fin_data

        return load_site_fin_data(
            site_name, self.data_path, seed=self.seed, synthetic_sites=self.synthetic_sites,
            synthetic_alpha=self.synthetic_alpha, synthetic_train_size=self.synthetic_train_size,
            synthetic_test_size=self.synthetic_test_size, synthetic_style=self.synthetic_style,
        )

    def make_trainer(self, spec, base_dir=None):
        from flaretune.train.causal import InstructTrainer

        return InstructTrainer(
            spec, max_length=self.max_length, num_threads=self.num_threads, system_prompt=self.system_prompt,
            label_words=self.label_words or SENTIMENT_LABELS, eval_batch_size=self.eval_batch_size,
            base_dir=base_dir, logit_adjustment=self.effective_logit_adjustment(),
        )

    def effective_logit_adjustment(self) -> float:
        """``logit_adjustment``, except 0 under DP-SGD: the prior is computed from every record of the site,
        so each record's loss would depend on the others, which DP-SGD's per-example accounting excludes."""
        return 0.0 if self.train_step == "dpsgd" else float(self.logit_adjustment)

    def flat_metrics(self, scores: dict, prefix: str = "") -> dict:
        return flat_causal_metrics(scores, prefix)
