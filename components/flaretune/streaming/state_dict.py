"""A state dict as a folder of safetensors shards, so full-model updates travel like any model folder.

``spill_state_dict`` writes shards of at most ``shard_mb`` plus a Hugging Face style index
(``model.safetensors.index.json``); ``load_state_dict`` reads them back memory-mapped. ``write_synthetic_model``
writes an N-byte model without ever holding it in memory (for the benchmark and tests).
torch and safetensors are imported lazily: the streaming job processes never need them.
"""

import json
import struct
from pathlib import Path
from typing import Dict, List

from flaretune.errors import ConfigError
from flaretune.streaming.chunks import MiB

INDEX_NAME = "model.safetensors.index.json"


def _shard_name(k: int, n: int) -> str:
    return f"model-{k:05d}-of-{n:05d}.safetensors"


def write_index(folder: Path, weight_map: Dict[str, str], total_size: int) -> None:
    """The Hugging Face shard index: which shard holds each tensor, and the tensor bytes in all."""
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=1))


def _group(sizes: Dict[str, int], shard_bytes: int) -> List[List[str]]:
    groups, current, used = [], [], 0
    for name, size in sizes.items():
        if current and used + size > shard_bytes:
            groups.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    if current:
        groups.append(current)
    return groups


def spill_state_dict(state_dict, folder, shard_mb: int = 1024) -> Path:
    """Write ``state_dict`` (name -> torch tensor) as safetensors shards + index into ``folder``; returns it.

    Memory: one shard's serialized bytes at a time on top of the tensors already in memory.
    """
    from safetensors.torch import save_file

    if not isinstance(shard_mb, (int, float)) or shard_mb <= 0:
        raise ConfigError(f"shard_mb must be > 0, got {shard_mb!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {k: t.numel() * t.element_size() for k, t in state_dict.items()}
    groups = _group(sizes, int(shard_mb * MiB))
    weight_map = {}
    for k, names in enumerate(groups, start=1):
        shard = _shard_name(k, len(groups))
        save_file({n: state_dict[n].detach().contiguous().cpu() for n in names}, str(folder / shard))
        weight_map.update({n: shard for n in names})
    write_index(folder, weight_map, sum(sizes.values()))
    return folder


def load_state_dict(folder) -> dict:
    """Read a spilled state dict (or any folder of ``*.safetensors``) memory-mapped; name order as in the index."""
    from safetensors import safe_open

    folder = Path(folder)
    index_path = folder / INDEX_NAME
    weight_map = json.loads(index_path.read_text())["weight_map"] if index_path.is_file() else {}
    shards = list(dict.fromkeys(weight_map.values())) or sorted(p.name for p in folder.glob("*.safetensors"))
    if not shards:
        raise ConfigError(f"{folder}: no safetensors shards (and no {INDEX_NAME})")
    loaded = {}
    for shard in shards:
        with safe_open(str(folder / shard), framework="pt") as f:
            for name in f.keys():
                loaded[name] = f.get_tensor(name)
    result = {name: loaded.pop(name) for name in weight_map if name in loaded}
    result.update(loaded)
    return result


def write_synthetic_model(folder, size_bytes: int, shard_mb: int = 1024, tensor_mb: int = 64, seed: int = 0) -> Path:
    """An ``size_bytes`` bf16 model of random bytes in safetensors shards, written 16 MiB at a time."""
    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    size_bytes = max(2, int(size_bytes) // 2 * 2)
    tensor_bytes = max(2, int(tensor_mb * MiB) // 2 * 2)
    sizes, left, k = {}, size_bytes, 0
    while left > 0:
        sizes[f"layers.{k}.weight"] = min(tensor_bytes, left)
        left -= sizes[f"layers.{k}.weight"]
        k += 1
    groups = _group(sizes, max(int(shard_mb * MiB), tensor_bytes))
    rng = np.random.default_rng(seed)
    weight_map = {}
    for s, names in enumerate(groups, start=1):
        shard = _shard_name(s, len(groups))
        header, offset = {}, 0
        for n in names:
            header[n] = {"dtype": "BF16", "shape": [sizes[n] // 2], "data_offsets": [offset, offset + sizes[n]]}
            offset += sizes[n]
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data must start 8-byte aligned
        with open(folder / shard, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            left = offset
            while left > 0:
                n = min(16 * MiB, left)
                f.write(rng.bytes(n))
                left -= n
        weight_map.update({n: shard for n in names})
    write_index(folder, weight_map, size_bytes)
    return folder
