"""Aggregation of full models that live on disk, one tensor at a time, through the same Strategy as adapters.

``aggregate_folders`` reads every site's update folder memory-mapped (safetensors), validates it, applies
the strategy's server step to each tensor and writes the result as shards of at most ``shard_mb``.
Memory: one output shard plus one tensor per site, whatever the model size. Files other than safetensors shards and their index (``config.json``,
tokenizer files) are copied from the first folder, so the result loads like the inputs did.
"""

import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

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


def _check_weights(folders: Sequence, weights: Sequence[float]) -> None:
    if len(folders) != len(weights) or not folders:
        raise ConfigError(f"need one weight per folder, got {len(folders)} folders and {len(weights)} weights")
    if any(not isinstance(w, (int, float)) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"weights must be >= 0 with a positive sum, got {list(weights)}")


def average_folders(folders: Sequence, weights: Sequence[float], out, shard_mb: float = 1024) -> Path:
    """Write the ``weights``-weighted mean of the models in ``folders`` to ``out``; returns ``out``.

    FedAvg through :func:`aggregate_folders` with the first folder as the reference model. Every folder
    must hold the same tensor names with the same shapes and dtypes: a mismatch is an error naming the
    folder and the tensor.
    """
    from flaretune.aggregation.strategy import make_strategy
    from flaretune.aggregation.validation import ValidationPolicy

    folders = [Path(f) for f in folders]
    _check_weights(folders, weights)
    updates = {str(i): (f, float(w)) for i, (f, w) in enumerate(zip(folders, weights)) if w > 0}
    policy = ValidationPolicy(max_num_examples=float("inf"), norm_outlier_factor=0)
    _, _, rejected = aggregate_folders(make_strategy("fedavg", policy=policy), folders[0], updates, out, shard_mb)
    if rejected:
        key, reason = next(iter(rejected.items()))
        raise ConfigError(f"{folders[int(key)]}: {reason}")
    return Path(out)


def _check_folder(global_handles, handles) -> Tuple[Optional[str], float]:
    """Per-update checks, one tensor in memory at a time: ``(reason or None, squared norm of the update)``."""
    import torch

    if set(handles) != set(global_handles):
        diff = sorted(set(handles) ^ set(global_handles))[:5]
        return f"tensors differ from the global model (e.g. {', '.join(diff)})", 0.0
    squared = 0.0
    for name, handle in global_handles.items():
        reference, value = handle.get_tensor(name), handles[name].get_tensor(name)
        if value.shape != reference.shape or value.dtype != reference.dtype:
            return (f"tensor {name!r} is {value.dtype} {tuple(value.shape)}, "
                    f"expected {reference.dtype} {tuple(reference.shape)}"), 0.0
        if value.is_floating_point():
            if not torch.isfinite(value).all():
                return f"tensor {name!r} has non-finite values (NaN or Inf)", 0.0
            squared += float(((value.double() - reference.double()) ** 2).sum())
        elif not torch.equal(value, reference):
            return f"non-float tensor {name!r} differs from the global model's", 0.0
    return None, squared


def aggregate_folders(strategy, global_folder, updates: Mapping[str, Tuple[object, object]], out,
                      shard_mb: float = 1024) -> Tuple[Path, List[str], Dict[str, str]]:
    """Validate each site's folder against ``global_folder``, then aggregate the accepted ones into ``out``.

    ``updates`` maps site to ``(folder, example count)``. The checks are the in-memory ones
    (:mod:`flaretune.aggregation.validation`: example count, names, shapes, dtypes, finite values, norm
    outliers), done tensor by tensor; the server step is ``strategy``'s, applied tensor by tensor through
    :meth:`Strategy.aggregate_in_parts` (float tensors in float32, stored in their own dtype; other
    tensors, such as position ids, must equal the global model's and are copied). Memory: one output shard
    plus one tensor per site. Returns ``(out, accepted sites, {rejected site: reason})``; with nothing
    accepted, nothing is written.
    """
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from flaretune.aggregation.validation import check_num_examples, outliers_by_norm

    out = Path(out)
    rejected, norms = {}, {}
    with ExitStack() as stack:
        global_handles = _open_folder(Path(global_folder), stack)
        handles = {}
        for site in sorted(updates):
            folder, num_examples = updates[site]
            reason = check_num_examples(num_examples, strategy.policy.max_num_examples)
            if reason is None:
                try:
                    handles[site] = _open_folder(Path(folder), stack)
                except ConfigError as err:
                    reason = str(err)
            if reason is None:
                reason, squared = _check_folder(global_handles, handles[site])
                norms[site] = squared ** 0.5
            if reason is not None:
                rejected[site] = reason
        rejected.update(outliers_by_norm(norms, strategy.policy.norm_outlier_factor))
        accepted = [site for site in sorted(updates) if site not in rejected]
        if not accepted:
            return out, [], rejected
        weights = [float(updates[site][1]) for site in accepted]

        def parts():
            for name, handle in global_handles.items():
                reference = handle.get_tensor(name)
                if reference.is_floating_point():
                    site_values = [handles[s][name].get_tensor(name).float().numpy() for s in accepted]
                    yield {name: reference.float().numpy()}, [({name: v}, w) for v, w in zip(site_values, weights)]

        new_values = strategy.aggregate_in_parts(parts())
        out.mkdir(parents=True, exist_ok=True)
        shard_bytes = max(1, int(shard_mb * MiB))
        pending, pending_bytes, written = {}, 0, []  # written: (file, names)

        def flush():
            nonlocal pending, pending_bytes
            if pending:
                name = f"part-{len(written):05d}.safetensors"
                save_file(pending, str(out / name))
                written.append((name, list(pending)))
                pending, pending_bytes = {}, 0

        for name, handle in global_handles.items():
            reference = handle.get_tensor(name)
            if reference.is_floating_point():
                result = torch.from_numpy(np.ascontiguousarray(next(new_values)[name])).to(reference.dtype)
            else:
                result = reference
            size = result.numel() * result.element_size()
            if pending and pending_bytes + size > shard_bytes:
                flush()
            pending[name] = result.contiguous()
            pending_bytes += size
        flush()
        for _ in new_values:  # exhaust: the strategy counts its step once every part is done
            pass
    _finish(Path(global_folder), out, written)
    return out, accepted, rejected


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


class FolderStore:
    """:class:`~flaretune.aggregation.rounds.UpdateStore` for whole models: every update is a folder of shards.

    The global model of round ``r`` is written to ``<global_root>/round-<r>/`` (3 digits); the sites' update
    folders are deleted once aggregated unless ``keep_updates``.
    """

    def __init__(self, global_root, shard_mb: float = 1024, keep_updates: bool = False):
        self.global_root = Path(global_root)
        self.shard_mb = shard_mb
        self.keep_updates = keep_updates

    def aggregate(self, strategy, global_model, results, round_number):
        out = self.global_root / f"round-{round_number:03d}"
        updates = {site: (r.update, r.num_examples) for site, r in results.items()}
        out, accepted, rejected = aggregate_folders(strategy, global_model, updates, out, self.shard_mb)
        if not self.keep_updates:
            for result in results.values():
                shutil.rmtree(result.update, ignore_errors=True)
        return (out if accepted else global_model), accepted, rejected

    def save_model(self, global_model, folder, round_number):
        return {"folder": str(global_model)}

    def load_model(self, ref, folder):
        path = Path(ref["folder"])
        if not path.is_dir():
            raise ConfigError(f"the checkpoint's global model folder {path} is gone")
        return path
