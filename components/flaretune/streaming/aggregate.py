"""Weighted average of full models that live on disk, one tensor at a time.

``average_folders`` reads every site's update folder memory-mapped (safetensors), averages each tensor in
float32 and writes the result as shards of at most ``shard_mb``. Memory: one output shard plus one tensor
per site, whatever the model size. Files other than safetensors shards and their index (``config.json``,
tokenizer files) are copied from the first folder, so the result loads like the inputs did.
"""

import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Dict, List, Sequence

from flaretune.errors import ConfigError
from flaretune.streaming.chunks import MiB
from flaretune.streaming.state_dict import INDEX_NAME, _shard_name, write_index


def _open_folder(folder: Path, stack: ExitStack) -> Dict[str, object]:
    """tensor name -> open safetensors handle of the shard that holds it."""
    from safetensors import safe_open

    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise ConfigError(f"{folder}: no safetensors shards to average")
    handles = {}
    for shard in shards:
        handle = stack.enter_context(safe_open(str(shard), framework="pt"))
        for name in handle.keys():
            if name in handles:
                raise ConfigError(f"{shard}: tensor {name!r} is also in another shard of {folder}")
            handles[name] = handle
    return handles


def _check_weights(folders: Sequence, weights: Sequence[float]) -> List[float]:
    if len(folders) != len(weights) or not folders:
        raise ConfigError(f"need one weight per folder, got {len(folders)} folders and {len(weights)} weights")
    if any(not isinstance(w, (int, float)) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    return [float(w) / float(sum(weights)) for w in weights]


def average_folders(folders: Sequence, weights: Sequence[float], out, shard_mb: float = 1024) -> Path:
    """Write the ``weights``-weighted mean of the models in ``folders`` to ``out``; returns ``out``.

    Floating tensors are averaged in float32 and stored in their own dtype; other tensors (integer buffers
    such as position ids) must be equal everywhere and are copied. Every folder must hold the same tensor
    names with the same shapes and dtypes: a mismatch is an error naming the folder and the tensor.
    """
    import torch
    from safetensors.torch import save_file

    folders = [Path(f) for f in folders]
    shares = _check_weights(folders, weights)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shard_bytes = max(1, int(shard_mb * MiB))
    with ExitStack() as stack:
        handles = [_open_folder(f, stack) for f in folders]
        names = list(handles[0])
        for folder, h in zip(folders[1:], handles[1:]):
            if set(h) != set(names):
                diff = sorted(set(h) ^ set(names))[:5]
                raise ConfigError(f"{folder}: tensors differ from {folders[0]} (e.g. {', '.join(diff)})")
        pending, pending_bytes, written = {}, 0, []  # written: (file, names)

        def flush():
            nonlocal pending, pending_bytes
            if pending:
                name = f"part-{len(written):05d}.safetensors"
                save_file(pending, str(out / name))
                written.append((name, list(pending)))
                pending, pending_bytes = {}, 0

        for name in names:
            first = handles[0][name].get_tensor(name)
            if first.is_floating_point():
                total = first.to(torch.float32) * shares[0]
                for folder, h, share in zip(folders[1:], handles[1:], shares[1:]):
                    other = h[name].get_tensor(name)
                    _check_same(folder, name, first, other)
                    total.add_(other.to(torch.float32), alpha=share)
                result = total.to(first.dtype)
            else:
                for folder, h in zip(folders[1:], handles[1:]):
                    other = h[name].get_tensor(name)
                    _check_same(folder, name, first, other)
                    if not torch.equal(first, other):
                        raise ConfigError(f"{folder}: non-float tensor {name!r} differs from {folders[0]}")
                result = first
            size = result.numel() * result.element_size()
            if pending and pending_bytes + size > shard_bytes:
                flush()
            pending[name] = result.contiguous()
            pending_bytes += size
        flush()
    _finish(folders[0], out, written)
    return out


def _check_same(folder: Path, name: str, first, other) -> None:
    if other.shape != first.shape or other.dtype != first.dtype:
        raise ConfigError(
            f"{folder}: tensor {name!r} is {other.dtype} {tuple(other.shape)}, "
            f"expected {first.dtype} {tuple(first.shape)}"
        )


def _finish(template: Path, out: Path, written: List[tuple]) -> None:
    """Name the shards like Hugging Face does, write the index, copy the other files of ``template``."""
    weight_map, total = {}, 0
    for k, (tmp_name, names) in enumerate(written, start=1):
        final = _shard_name(k, len(written)) if len(written) > 1 else "model.safetensors"
        (out / tmp_name).rename(out / final)
        weight_map.update({n: final for n in names})
        total += (out / final).stat().st_size
    if len(written) > 1:
        write_index(out, weight_map, total)
    for item in template.iterdir():
        if item.is_file() and item.suffix != ".safetensors" and item.name != INDEX_NAME:
            shutil.copy2(item, out / item.name)
