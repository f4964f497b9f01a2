"""A server checkpoint after every completed round, written so that a killed server loses at most one round.

``<run dir>/checkpoint/`` holds ``state.json`` (round, strategy metadata, sampling RNG state, history, and
where the global model is) beside ``strategy-NNN.safetensors`` (the strategy's arrays: optimiser
moments) and, for in-memory models, ``global-NNN.safetensors``. Each file is written to a temporary name
and renamed; ``state.json`` is renamed last, so it always names files that are complete, and files of
older rounds are removed only after it. A job submitted with ``resume_from`` pointing at such a folder
(or restored from FLARE's job snapshot) continues after the checkpoint's round.
"""

import json
from pathlib import Path
from typing import Optional

from flaretune.aggregation.rounds import atomic_write
from flaretune.aggregation.state import flatten_state, unflatten_state
from flaretune.errors import ConfigError
from flaretune.paths import resolve_under

CHECKPOINT_DIR = "checkpoint"  # in a job's run folder
STATE_FILE = "state.json"
FORMAT = 1


class Checkpoint:
    def __init__(self, folder):
        self.folder = Path(folder)

    def save(self, round_number: int, store, global_model, strategy, rng, history: dict) -> Path:
        from safetensors.numpy import save_file

        meta, arrays = flatten_state(strategy.state_dict())
        strategy_file = f"strategy-{round_number:03d}.safetensors"
        atomic_write(self.folder / strategy_file, lambda tmp: save_file(arrays, str(tmp)))
        state = {
            "format": FORMAT,
            "round": round_number,
            "global_model": store.save_model(global_model, self.folder, round_number),
            "strategy": {"meta": meta, "arrays": strategy_file},
            "rng": rng.bit_generator.state,
            "history": history,
        }
        path = atomic_write(self.folder / STATE_FILE, lambda tmp: tmp.write_text(json.dumps(state)))
        keep = {STATE_FILE, strategy_file, state["global_model"].get("file")}
        for old in self.folder.glob("*-[0-9][0-9][0-9].safetensors"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
        return path

    def exists(self) -> bool:
        return (self.folder / STATE_FILE).is_file()

    def load(self, store) -> Optional[dict]:
        """``{"round", "global_model", "strategy", "rng", "history", "folder"}``, or None without a checkpoint."""
        from safetensors.numpy import load_file

        path = self.folder / STATE_FILE
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
            arrays = load_file(str(self.folder / state["strategy"]["arrays"]))
            return {
                "round": int(state["round"]),
                "global_model": store.load_model(state["global_model"], self.folder),
                "strategy": unflatten_state(state["strategy"]["meta"], arrays),
                "rng": state["rng"],
                "history": state["history"],
                "folder": str(self.folder),
            }
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise ConfigError(f"{path}: not a readable flaretune checkpoint ({err})") from None


def resume_point(workspace_root, folder: str, store) -> Optional[dict]:
    """What a controller continues from: the checkpoint in ``folder`` (``resume_from``, or the one FLARE's job
    snapshot named; absolute, or relative to the server's workspace root), or None when ``folder`` is empty."""
    if not folder:
        return None
    checkpoint = Checkpoint(resolve_under(workspace_root, folder))
    if not checkpoint.exists():
        raise ConfigError(f"resume_from {str(checkpoint.folder)!r} holds no checkpoint (no {STATE_FILE})")
    return checkpoint.load(store)


def snapshot_folder(state_data: Optional[dict]) -> str:
    """The checkpoint folder a FLARE job snapshot names, if it holds a checkpoint; else ''."""
    folder = (state_data or {}).get("checkpoint", "")
    return folder if folder and Checkpoint(folder).exists() else ""
