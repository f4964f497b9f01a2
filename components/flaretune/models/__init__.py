"""Offline base models, LoRA configurations and tiny test twins."""

from flaretune.models.base import (
    BASE_MODELS,
    CAUSAL_LM_MODELS,
    TOKEN_CLASSIFICATION_MODELS,
    load_base_model,
    load_tokenizer,
    validate_model_name,
)

__all__ = [
    "BASE_MODELS",
    "CAUSAL_LM_MODELS",
    "TOKEN_CLASSIFICATION_MODELS",
    "load_base_model",
    "load_tokenizer",
    "validate_model_name",
]
