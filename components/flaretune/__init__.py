"""flaretune: federated fine-tuning of language models on NVIDIA FLARE."""

__version__ = "0.1.0"
