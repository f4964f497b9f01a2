"""LoRA specification shared by server and clients, and the adapter <-> tensor-dict conversions.

The server owns one :class:`PeftSpec` and sends it with every task, so a site can never train a
different adapter shape than the one being aggregated. Only the tensors of
``get_peft_model_state_dict`` travel: LoRA A/B matrices plus the task head (``modules_to_save``);
their names are exactly those of ``adapter_model.safetensors``.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

from flaretune.errors import ConfigError
from flaretune.models.base import CAUSAL_LM_MODELS, TOKEN_CLASSIFICATION_MODELS, load_base_model, validate_model_name

LABELS_FILE = "labels.json"


@dataclass
class PeftSpec:
    """What model is trained: base model name, label set (token classification) and LoRA shape."""

    model_name: str = field(default="minilm-ner", metadata={"help": "base model name (see flaretune.models)"})
    labels: Optional[List[str]] = field(default=None, metadata={"help": "BIO label list for token classification"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.1, metadata={"help": "dropout on the LoRA input"})
    target_modules: List[str] = field(default_factory=lambda: ["query", "value"], metadata={"help": "module names"})
    seed: int = field(default=0, metadata={"help": "seed of the initial adapter and head"})
    method: str = field(default="lora", metadata={"help": "client method (flaretune.train.methods): lora, full, ..."})
    layers: Optional[Union[str, List[int]]] = field(
        default=None, metadata={"help": "layers that train: '0,2', 'top2', 'every_other' (None: all)"})
    method_args: Optional[Dict[str, object]] = field(default=None, metadata={"help": "the method's own options"})

    def __post_init__(self):
        from flaretune.train.methods import validate_method

        validate_model_name(self.model_name)
        validate_method(self.method)
        if self.method_args is not None and not isinstance(self.method_args, dict):
            raise ConfigError(f"method_args must be a dict of the method's options, got {self.method_args!r}")
        if self.lora_r < 1:
            raise ConfigError(f"lora_r must be >= 1, got {self.lora_r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.target_modules:
            raise ConfigError("target_modules must name at least one module, e.g. ['query', 'value']")
        if self.is_token_classification and not self.labels:
            raise ConfigError(f"model {self.model_name!r} is a token classifier: labels must be given")

    @property
    def is_token_classification(self) -> bool:
        return self.model_name in TOKEN_CLASSIFICATION_MODELS

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PeftSpec":
        return cls(**data)

    def lora_config(self, layers_to_transform: Optional[List[int]] = None):
        """PEFT's config; ``layers_to_transform``: adapters on those transformer layers only."""
        from peft import LoraConfig, TaskType

        task_type = TaskType.TOKEN_CLS if self.is_token_classification else TaskType.CAUSAL_LM
        return LoraConfig(
            task_type=task_type,
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.target_modules),
            layers_to_transform=layers_to_transform,
        )

    def build(self, model_dir=None):
        """A fresh model of the spec's method (:mod:`flaretune.train.methods`); for ``lora``: frozen base, LoRA
        adapters and (token classification) a trainable head.

        ``model_dir``: load the base from this Hugging Face folder (same family as ``model_name``).
        """
        from flaretune.train.methods import method_for

        return method_for(self).build(model_dir)


def adapter_state(model) -> Dict[str, "object"]:
    """The trainable tensors, detached and on the CPU, keyed as in ``adapter_model.safetensors``."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_state(model, params: Dict[str, "object"]) -> None:
    """Load tensors (torch or numpy) into the adapter; a missing or misshapen tensor is an error."""
    import torch
    from peft import set_peft_model_state_dict

    expected = adapter_state(model)
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    if missing or unexpected:
        raise ConfigError(
            f"adapter tensors do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    tensors = {}
    for name, ref in expected.items():
        value = params[name]
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ConfigError(f"adapter tensor {name}: shape {tuple(tensor.shape)}, expected {tuple(ref.shape)}")
        tensors[name] = tensor.to(ref.dtype)
    set_peft_model_state_dict(model, tensors)


def save_adapter_folder(spec: PeftSpec, params: Dict[str, "object"], out_dir, model=None,
                        task: Optional[dict] = None) -> Path:
    """Write an HF PEFT adapter folder that ``PeftModel.from_pretrained`` loads.

    Contents: ``adapter_config.json``, ``adapter_model.safetensors``, ``labels.json`` (label map, the
    flaretune spec and, when given, ``task``: how the model is prompted and scored, e.g. the system
    prompt and label words, so ``flaretune predict`` / ``chat`` use it as training did) and the tokenizer.
    """
    from flaretune.models.base import load_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from flaretune.train.methods import method_for

    method = method_for(spec)
    model = model if model is not None else method.build()
    method.set_params(model, params)
    model.save_pretrained(str(out), safe_serialization=True)
    load_tokenizer(spec.model_name).save_pretrained(str(out))
    meta = {"flaretune_spec": spec.to_dict()}
    if task:
        meta["flaretune_task"] = dict(task)
    if spec.labels:
        meta["id2label"] = {str(i): label for i, label in enumerate(spec.labels)}
        meta["label2id"] = {label: i for i, label in enumerate(spec.labels)}
    (out / LABELS_FILE).write_text(json.dumps(meta, indent=2))
    return out


def read_adapter_spec(adapter_dir) -> PeftSpec:
    path = Path(adapter_dir) / LABELS_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not a flaretune adapter folder (no {LABELS_FILE})")
    return PeftSpec.from_dict(json.loads(path.read_text())["flaretune_spec"])


def read_adapter_task(adapter_dir) -> dict:
    """The ``task`` the adapter folder was saved with (empty when none)."""
    path = Path(adapter_dir) / LABELS_FILE
    return dict(json.loads(path.read_text()).get("flaretune_task") or {}) if path.is_file() else {}


def load_adapter_model(adapter_dir):
    """Base model + adapter from a folder written by :func:`save_adapter_folder`, via ``PeftModel.from_pretrained``;
    a folder of a method that trains the base's own weights (``full``, ``layer_skip``) holds the whole model."""
    from peft import PeftModel

    spec = read_adapter_spec(adapter_dir)
    if not (Path(adapter_dir) / "adapter_config.json").is_file():  # full / layer_skip: a whole model folder
        return load_base_model(spec.model_name, labels=spec.labels, seed=spec.seed, model_dir=adapter_dir), spec
    base = load_base_model(spec.model_name, labels=spec.labels, seed=spec.seed)
    return PeftModel.from_pretrained(base, str(adapter_dir)), spec


__all__ = [
    "CAUSAL_LM_MODELS",
    "PeftSpec",
    "adapter_state",
    "load_adapter_model",
    "load_adapter_state",
    "read_adapter_spec",
    "read_adapter_task",
    "save_adapter_folder",
]
