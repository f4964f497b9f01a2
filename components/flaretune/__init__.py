"""flaretune: federated fine-tuning of language models on NVIDIA FLARE."""

import logging as _logging
import warnings as _warnings

__version__ = "0.1.0"

# Third-party noise that says nothing to our users: bitsandbytes asks for an optional CPU kernel
# package on every import, and PEFT still calls a transformers property deprecated for v6.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
_warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
