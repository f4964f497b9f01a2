"""SmolLM2-135M-Instruct from its Q4_1 GGUF: dequantised once into the cache, loaded from there afterwards.

Converting the GGUF takes ~20 s and ~4 GB peak, so it happens once per cache. Several simulated
clients may start at the same moment: each converts into its own temporary folder and renames it
into place; the first rename wins and the others discard their copy, so no reader sees half a folder.
"""

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from flaretune.models.assets import SMOLLM2, cache_dir, package_dir

logger = logging.getLogger(__name__)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MODEL_DIR = "smollm2-135m-instruct-f32"
_TOKENIZER_DIR = "smollm2-135m-tokenizer"
_DONE = "flaretune-complete"


def _publish(build, name: str) -> Path:
    """Build a folder with ``build(tmp_dir)`` and atomically rename it to ``cache_dir()/name``."""
    final = cache_dir() / name
    if (final / _DONE).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-{uuid.uuid4().hex[:8]}-", dir=final.parent))
    try:
        build(tmp)
        (tmp / _DONE).write_text("ok\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / _DONE).exists():  # a stale, incomplete folder: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def smollm2_tokenizer_dir() -> Path:
    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(package_dir(SMOLLM2)), gguf_file=GGUF_FILE)
        tokenizer.save_pretrained(str(tmp))

    return _publish(build, _TOKENIZER_DIR)


def dequantized_dir() -> Path:
    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        logger.info("dequantising %s once into %s (about 20 s)", GGUF_FILE, cache_dir())
        source = str(package_dir(SMOLLM2))
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
        # the weights are plain float32 now, but transformers still marks the model GGUF-quantized
        # and refuses to save it: drop the marker
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE).save_pretrained(str(tmp))

    return _publish(build, _MODEL_DIR)
