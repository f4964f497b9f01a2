"""Which transformer layers a layer-selecting client method trains — pure Python, no torch.

Layer-skipping federated fine-tuning (Zhang & Li, 2025) trains only some transformer layers and keeps the
rest frozen, so only their tensors travel. A job names the layers as an index list (``[0, 2]`` or ``"0,2"``),
the top ``k`` (``"top2"``, ``"top 2"``: the ``k`` layers nearest the output) or ``"every_other"`` (0, 2, 4, ...).
"""

import re
from typing import List, Optional, Sequence, Union

from flaretune.errors import ConfigError

Layers = Union[None, str, int, Sequence[int]]
_LAYER_NAME = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")
_HELP = "an index list like '0,2', 'top2' (the k layers nearest the output) or 'every_other'"


def select_layers(layers: Layers, num_layers: int) -> List[int]:
    """The sorted layer indices ``layers`` names in a model of ``num_layers`` transformer layers."""
    if layers is None or layers == "" or layers == []:
        raise ConfigError(f"layers is empty; expected {_HELP}")
    if isinstance(layers, str):
        text = layers.strip().lower().replace("-", "_")
        top = re.fullmatch(r"top\s*_?(\d+)", text)
        if top:
            k = int(top.group(1))
            if not 1 <= k <= num_layers:
                raise ConfigError(f"layers {layers!r}: k must be in 1..{num_layers} (the model's layers)")
            return list(range(num_layers - k, num_layers))
        if text in ("every_other", "every other"):
            return list(range(0, num_layers, 2))
        try:
            indices = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"layers {layers!r} is not {_HELP}") from None
    elif isinstance(layers, bool):
        raise ConfigError(f"layers {layers!r} is not {_HELP}")
    elif isinstance(layers, int):
        indices = [layers]
    else:
        if any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
            raise ConfigError(f"layers {list(layers)!r}: every index must be an integer")
        indices = list(layers)
    bad = [i for i in indices if not 0 <= i < num_layers]
    if bad or not indices:
        raise ConfigError(f"layers {layers!r}: indices must be in 0..{num_layers - 1} (the model has {num_layers})")
    if len(set(indices)) != len(indices):
        raise ConfigError(f"layers {layers!r} repeats an index")
    return sorted(indices)


def layer_of(param_name: str) -> Optional[int]:
    """The transformer layer a parameter belongs to (``bert.encoder.layer.3.…`` → 3), None outside the layers."""
    match = _LAYER_NAME.search("." + param_name)
    return int(match.group(1)) if match else None


def num_layers_of(model) -> int:
    """Transformer layers of a Hugging Face model (its config's ``num_hidden_layers``)."""
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None)
    if not n:
        raise ConfigError(f"{type(model).__name__} has no config.num_hidden_layers: cannot select layers")
    return int(n)
