"""Offline base models by name, plus tiny randomly initialised twins with the real tokenizers for tests.

Names (job configs carry these strings):
  ``minilm-ner``        6-layer uncased MiniLM/BERT for token classification (22.6M params)
  ``smollm2-135m``      SmolLM2-135M-Instruct, Llama architecture, ChatML template
  ``tiny-minilm-ner``   2-layer, hidden 32, same tokenizer — a training step takes milliseconds
  ``tiny-smollm2``      2-layer, hidden 32 Llama with the SmolLM2 tokenizer
"""

import logging
from pathlib import Path
from typing import Dict, Optional, Sequence

from flaretune.errors import ConfigError
from flaretune.models.assets import MINILM, package_dir
from flaretune.models.smollm2 import dequantized_dir, smollm2_tokenizer_dir

logger = logging.getLogger(__name__)

BASE_MODELS = ("minilm-ner", "smollm2-135m", "tiny-minilm-ner", "tiny-smollm2")
TOKEN_CLASSIFICATION_MODELS = ("minilm-ner", "tiny-minilm-ner")
CAUSAL_LM_MODELS = ("smollm2-135m", "tiny-smollm2")


def validate_model_name(name: str) -> str:
    if name not in BASE_MODELS:
        raise ConfigError(f"Invalid model name {name!r}; valid: {', '.join(BASE_MODELS)}")
    return name


def _minilm_dir():
    return package_dir(MINILM) / "model"


def _model_folder(model_dir) -> Path:
    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder}: not a model folder (no config.json); was the model pushed to this site?")
    return folder


def load_tokenizer(name: str, model_dir=None):
    """The fast tokenizer of a base model (tiny twins share the real one); from ``model_dir`` when that
    folder carries one."""
    from transformers import AutoTokenizer

    validate_model_name(name)
    has_own = model_dir is not None and any(
        (Path(model_dir) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    )
    if has_own:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    elif name in TOKEN_CLASSIFICATION_MODELS:
        return AutoTokenizer.from_pretrained(str(_minilm_dir()))
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _label_maps(num_labels: Optional[int], labels: Optional[Sequence[str]]):
    if labels is not None:
        labels = list(labels)
        if num_labels is not None and num_labels != len(labels):
            raise ConfigError(f"num_labels={num_labels} but {len(labels)} labels were given")
        return len(labels), {i: l for i, l in enumerate(labels)}, {l: i for i, l in enumerate(labels)}
    if num_labels is None:
        raise ConfigError("a token-classification model needs num_labels or labels")
    id2label: Dict[int, str] = {i: f"LABEL_{i}" for i in range(num_labels)}
    return num_labels, id2label, {v: k for k, v in id2label.items()}


def load_base_model(name: str, num_labels: Optional[int] = None, labels: Optional[Sequence[str]] = None, seed: int = 0,
                    model_dir=None):
    """Load a base model by name, fully offline; from ``model_dir`` (a Hugging Face folder of the same
    family, e.g. one that ``model_push`` delivered) instead of the package when given.

    The token classifier's head is new (randomly initialised from ``seed``); transformers' report of
    unused pooler weights and a new classifier is expected and silenced.
    """
    import torch
    import transformers

    validate_model_name(name)
    torch.manual_seed(seed)
    if model_dir is not None:
        folder = str(_model_folder(model_dir))
        with _quiet_transformers():
            if name in TOKEN_CLASSIFICATION_MODELS:
                n, id2label, label2id = _label_maps(num_labels, labels)
                return transformers.AutoModelForTokenClassification.from_pretrained(
                    folder, num_labels=n, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True
                )
            return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if name in TOKEN_CLASSIFICATION_MODELS:
        n, id2label, label2id = _label_maps(num_labels, labels)
        if name == "minilm-ner":
            with _quiet_transformers():
                return transformers.AutoModelForTokenClassification.from_pretrained(
                    str(_minilm_dir()), num_labels=n, id2label=id2label, label2id=label2id
                )
        config = transformers.BertConfig(
            vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=512, num_labels=n, id2label=id2label, label2id=label2id,
        )
        return transformers.BertForTokenClassification(config)
    if name == "smollm2-135m":
        with _quiet_transformers():
            return transformers.AutoModelForCausalLM.from_pretrained(str(dequantized_dir()), dtype=torch.float32)
    tokenizer = load_tokenizer(name)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    return transformers.LlamaForCausalLM(config)


class _quiet_transformers:
    """Silence transformers' load report (unused pooler, newly initialised head) for one call."""

    def __enter__(self):
        import transformers

        self._level = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()

    def __exit__(self, *exc):
        import transformers

        transformers.logging.set_verbosity(self._level)
        transformers.logging.enable_progress_bar()
        return False
