"""QLoRA (Dettmers et al., 2023, arXiv:2305.14314): ``"method": "qlora"``.

The frozen base's linear layers are held in 4-bit NormalFloat (NF4) with double quantization (the block
absmax constants are themselves quantized to 8 bit), LoRA adapters and the task head stay in float32 on
top. The kernels are bitsandbytes' ``Linear4bit``, on its CPU backend as on CUDA: a weight is quantized when
the layer is moved to its device, and each forward dequantizes it block by block (compute dtype float32 by
default). Embeddings, norms and the head (``classifier``, ``score``, ``lm_head``, which SmolLM2 ties to its
embeddings) stay in full precision, as in the paper.

Only the adapters train and travel, exactly LoRA's tensors, so the server aggregates plain LoRA
(``exchange = "lora"``): a site short of memory can run ``qlora`` inside a ``lora`` job.

bitsandbytes is a dependency of flaretune; it is imported only when a qlora model is built.
"""

from typing import Dict, Optional

from flaretune.errors import ConfigError
from flaretune.train.methods import LoraMethod

FULL_PRECISION = ("classifier", "score", "lm_head")  # heads: trained (token classification) or tied
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def bitsandbytes_missing() -> Optional[str]:
    """None when bitsandbytes' 4-bit layer imports, else one line saying why not."""
    try:
        import bitsandbytes as bnb
    except Exception as err:  # ImportError, or a broken native library
        return f"bitsandbytes is not usable here ({type(err).__name__}: {err}); pip install 'bitsandbytes>=0.45'"
    if not hasattr(bnb.nn, "Linear4bit"):
        return f"bitsandbytes {bnb.__version__} has no Linear4bit; pip install 'bitsandbytes>=0.45'"
    return None


def quantize_base(model, compute_dtype: str = "float32", device: str = "cpu", keep=FULL_PRECISION) -> int:
    """Replace every ``nn.Linear`` of ``model`` (except modules named in ``keep``) by an NF4, double-quantized
    ``bnb.nn.Linear4bit`` on ``device``, in place; returns how many layers were replaced."""
    import torch

    reason = bitsandbytes_missing()
    if reason:
        raise ConfigError(f"method 'qlora' needs bitsandbytes: {reason}")
    import bitsandbytes as bnb

    if compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"qlora compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {compute_dtype!r}")
    dtype = getattr(torch, compute_dtype)
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and not any(part in keep for part in name.split("."))]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                  compute_dtype=dtype, compress_statistics=True, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, compress_statistics=True,
                                         quant_type="nf4")
        if linear.bias is not None:
            layer.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
        # bitsandbytes' CPU inference fast path repacks the weight in place and drops double quantization
        # (absmax back to float32), and fails on layers narrower than a block: keep the one NF4 layout
        layer.support_avx512bf16_for_cpu = False
        setattr(parent, child, layer.to(device))  # Params4bit quantizes on the move to a device
    model.is_loaded_in_4bit = True  # what transformers sets: PEFT then wraps these layers with its 4-bit LoRA
    return len(targets)


def base_storage(model) -> Dict[str, int]:
    """How the base is held: 4-bit layers, their packed weight bytes, and what those weights take in float32."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    packed = sum(m.weight.numel() * m.weight.element_size() for m in layers)
    elements = sum(m.in_features * m.out_features for m in layers)
    return {"linear4bit_layers": len(layers), "packed_weight_bytes": packed, "float32_weight_bytes": 4 * elements}


class QloraMethod(LoraMethod):
    """LoRA on an NF4 double-quantized frozen base; ``method_args``: ``compute_dtype`` (float32),
    ``device`` (cpu; cuda on a GPU site)."""

    name = "qlora"
    exchange = "lora"

    def __init__(self, spec, compute_dtype: str = "float32", device: str = "cpu"):
        super().__init__(spec)
        if compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"qlora compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {compute_dtype!r}")
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"qlora device must be 'cpu' or 'cuda', got {device!r}")
        self.compute_dtype, self.device = compute_dtype, device

    def build(self, base_dir=None):
        from peft import get_peft_model

        from flaretune.models.base import load_base_model

        spec = self.spec
        base = load_base_model(spec.model_name, labels=spec.labels, seed=spec.seed, model_dir=base_dir)
        layers = self.layer_indices(base) if spec.layers not in (None, "", []) else None
        quantize_base(base, self.compute_dtype, self.device)
        model = get_peft_model(base, spec.lora_config(layers_to_transform=layers))
        return model.to(self.device)
