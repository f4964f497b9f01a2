"""A strategy's state on disk: the JSON-able metadata apart from the arrays, which go to safetensors.

``Strategy.state_dict()`` mixes both (``{"name": ..., "step": n, "moments": {"m": {tensor: array}}}``);
:func:`flatten_state` splits it so a controller writes ``meta`` with ``json`` and ``arrays`` with
``safetensors.numpy.save_file``, and :func:`unflatten_state` puts it back together exactly.
"""

from typing import Dict, Mapping, Tuple

import numpy as np

ARRAY_REF = "__array__"  # in flattened meta, {"__array__": key} stands for arrays[key]


def flatten_state(state: Mapping) -> Tuple[dict, Dict[str, np.ndarray]]:
    """``(meta, arrays)``: ``state`` with each array replaced by ``{"__array__": key}``, and ``{key: array}``.

    A key is the path of dict keys joined by ``/``, e.g. ``moments/m/lora_A.weight``.
    """
    arrays: Dict[str, np.ndarray] = {}

    def walk(node, path):
        if isinstance(node, np.ndarray):
            key = "/".join(path)
            if key in arrays:
                raise ValueError(f"two arrays in the strategy state flatten to the same key {key!r}")
            arrays[key] = node
            return {ARRAY_REF: key}
        if isinstance(node, Mapping):
            bad = [k for k in node if not isinstance(k, str) or k == ARRAY_REF]
            if bad:
                raise ValueError(f"strategy state keys must be strings other than {ARRAY_REF!r}, got {bad[0]!r}")
            return {k: walk(v, path + (k,)) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [walk(v, path + (str(i),)) for i, v in enumerate(node)]
        return node.item() if isinstance(node, np.generic) else node

    return walk(state, ()), arrays


def unflatten_state(meta: Mapping, arrays: Mapping[str, np.ndarray]) -> dict:
    """The inverse of :func:`flatten_state`."""

    def walk(node):
        if isinstance(node, Mapping):
            if set(node) == {ARRAY_REF}:
                if node[ARRAY_REF] not in arrays:
                    raise ValueError(f"the strategy state names array {node[ARRAY_REF]!r}, which the arrays file lacks")
                return np.array(arrays[node[ARRAY_REF]])
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return walk(meta)
