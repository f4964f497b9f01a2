"""The one round loop every flaretune server workflow runs — no FLARE import.

A controller (:class:`~flaretune.aggregation.controller.FedAggController` for adapters in memory,
:class:`~flaretune.streaming.fedavg.StreamedFedAvg` for whole models in folders) is a :class:`RoundDriver`:
it sends the global model to the sites the strategy selects and brings their results back. An
:class:`UpdateStore` validates and aggregates those results where they live (arrays in memory, or
folders of shards on disk) through the same :class:`~flaretune.aggregation.strategy.Strategy`. After
every completed round :class:`~flaretune.aggregation.checkpoint.Checkpoint` persists the round, the global
model, the strategy's state, the sampling RNG and the history, so a job started again resumes there.

``history.json`` (one schema for every workflow)::

    {"strategy": "fedadam", "rounds": [{"round": 0, "seconds": 12.3, "started_at": 1796000000.0,
      "results_at": 1796000011.9, "global_model": "...",
      "selected": ["site-1", "site-3"],
      "sites": {"site-1": {"num_examples": 300, "metrics": {...}, "upload_param_bytes": 163764}},
      "rejected": {"site-3": "tensor 'x' has 1 non-finite value(s) (NaN or Inf)"}, "missing": [],
      "late": [{"site": "site-2", "round": 0, "task": "train"}]}],
     "final": {...}, "error": "..."}

Rounds are numbered from 0; the log says ``round r+1/N``.
"""

import json
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from flaretune.aggregation.strategy import Strategy

HISTORY_FILE = "history.json"
_SUMMARY_KEYS = ("local_f1", "local_accuracy", "f1", "accuracy")


@dataclass
class SiteResult:
    """One site's answer to ``train``: its update where the store keeps it, and what it reported."""

    update: object  # a dict of arrays (MemoryStore) or a folder (FolderStore)
    num_examples: object  # as the site sent it: validated before it becomes a weight
    metrics: dict = field(default_factory=dict)
    upload_bytes: Optional[int] = None

    def record(self) -> dict:
        """The site's entry in ``history.json`` (an update kept on disk is named by its folder)."""
        entry = {"num_examples": self.num_examples, "metrics": self.metrics, "upload_param_bytes": self.upload_bytes}
        if isinstance(self.update, (str, Path)):
            entry["update"] = str(self.update)
        return entry


class UpdateStore(ABC):
    """Where the global model and the sites' updates live, and how a round is validated and aggregated there."""

    @abstractmethod
    def aggregate(
        self, strategy: Strategy, global_model, results: Mapping[str, SiteResult], round_number: int
    ) -> Tuple[object, List[str], Dict[str, str]]:
        """``(new global model, accepted sites, {rejected site: reason})``; nothing rejected reaches the model."""

    @abstractmethod
    def save_model(self, global_model, folder: Path, round_number: int) -> dict:
        """Write (or reference) the global model for a checkpoint in ``folder``; JSON saying where it is."""

    @abstractmethod
    def load_model(self, ref: Mapping, folder: Path):
        """The global model a checkpoint's ``ref`` names."""


class MemoryStore(UpdateStore):
    """Updates are dicts of numpy arrays (adapters): validated and aggregated whole, in memory."""

    def aggregate(self, strategy, global_model, results, round_number):
        from flaretune.aggregation.validation import aggregate_round

        pairs = {site: (r.update, r.num_examples) for site, r in results.items()}
        return aggregate_round(strategy, global_model, pairs)

    def save_model(self, global_model, folder, round_number):
        from safetensors.numpy import save_file

        name = f"global-{round_number:03d}.safetensors"
        atomic_write(folder / name, lambda tmp: save_file(_contiguous(global_model), str(tmp)))
        return {"file": name}

    def load_model(self, ref, folder):
        from safetensors.numpy import load_file

        return load_file(str(folder / ref["file"]))


def _contiguous(params: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v) for k, v in params.items()}


def atomic_write(path: Path, write) -> Path:
    """``write(tmp)`` then rename onto ``path``: a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


class RoundDriver(ABC):
    """What a FLARE controller does for the loop: reach the sites, publish models, report."""

    @abstractmethod
    def available_clients(self) -> List[str]:
        """Names of the sites that can be asked to train now."""

    @abstractmethod
    def train(self, round_number: int, sites: List[str], global_model, meta: dict) -> Dict[str, SiteResult]:
        """Send ``train`` to ``sites`` with the global model and ``meta``; the results that came back."""

    @abstractmethod
    def publish(self, global_model, round_number: int, final: bool) -> str:
        """Persist the round's global model where users find it; returns its location."""

    def round_info(self) -> dict:
        """Extra fields for this round's history record (e.g. transfer figures)."""
        return {}

    def missing_reason(self, site: str) -> str:
        """Why ``site`` sent no result this round (for the one message that stops a job)."""
        return "no result"

    @abstractmethod
    def aborted(self) -> bool: ...

    @abstractmethod
    def info(self, message: str) -> None: ...

    @abstractmethod
    def warn(self, message: str) -> None: ...

    @abstractmethod
    def fail(self, message: str) -> None:
        """Stop the job with this one message."""


@dataclass
class RoundSettings:
    num_rounds: int
    min_clients: int = 0  # results that must be accepted for a round to count; 0 means 1
    seed: int = 0  # the sampling RNG's seed


def _too_few(available: List[str], selected: List[str]) -> str:
    if len(selected) < len(available) or not available:
        return "no site answered" if available else "no site connected"
    return f"only {len(available)} site(s) connected: {', '.join(available)}"


def summary(sites: Mapping[str, Mapping], keys=_SUMMARY_KEYS) -> str:
    """``site-1 f1 0.912, site-2 f1 0.874``: each site's headline score on its own test split."""
    parts = []
    for name, value in sorted(sites.items()):
        metrics = value.get("metrics", value)
        key = next((k for k in keys if isinstance(metrics.get(k), (int, float))), None)
        parts.append(f"{name} {key.split('_')[-1]} {metrics[key]:.3f}" if key else name)
    return ", ".join(parts)


def state_digest(state: Mapping) -> str:
    """sha256 over a strategy state's metadata and arrays: equal digests, equal states."""
    import hashlib

    from flaretune.aggregation.state import flatten_state

    meta, arrays = flatten_state(state)
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key], dtype=np.float64).tobytes())
    return digest.hexdigest()


def write_history(path: Path, history: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(history, indent=1)))


def new_history(strategy: Strategy) -> dict:
    return {"strategy": strategy.name, "rounds": [], "final": None}


def run_rounds(
    driver: RoundDriver,
    store: UpdateStore,
    strategy: Strategy,
    settings: RoundSettings,
    global_model,
    history_path: Path,
    checkpoint=None,
    resume: Optional[dict] = None,
) -> Tuple[Optional[object], dict]:
    """Rounds from the first one not completed to ``num_rounds``; ``(global model or None if stopped, history)``.

    ``resume`` is what :meth:`Checkpoint.load` returned: the loop continues after its round with its global
    model, strategy state, RNG state and history, so a resumed job runs ``num_rounds`` rounds in total.
    """
    rng = np.random.default_rng(settings.seed)
    history, start = new_history(strategy), 0
    if resume is not None:
        global_model, history, start = resume["global_model"], resume["history"], resume["round"] + 1
        strategy.load_state_dict(resume["strategy"])
        rng.bit_generator.state = resume["rng"]
        history.setdefault("resumed", []).append(
            {"after_round": resume["round"], "from": resume["folder"], "strategy_step": strategy.step,
             "strategy_sha256": state_digest(strategy.state_dict())})
        driver.info(f"resuming after round {start}/{settings.num_rounds} from {resume['folder']}")
    n = settings.num_rounds
    for r in range(start, n):
        if driver.aborted():
            driver.info(f"abort requested: stopping before round {r + 1}/{n}")
            return None, history
        started = time.time()
        available = driver.available_clients()  # read every round: sites join and leave between rounds
        selected, meta = strategy.configure_round(r, available, rng)
        driver.info(f"round {r + 1}/{n}: sending the global model to {len(selected)} site(s)"
                    + ("" if len(selected) == len(available) else
                       f" of {len(available)} available: {', '.join(selected)}"))
        results = driver.train(r, selected, global_model, meta)
        results_at = time.time()
        if driver.aborted():
            return None, history
        new_model, accepted, rejected = store.aggregate(strategy, global_model, results, r)
        missing = sorted(set(selected) - set(results))
        for site, reason in rejected.items():
            driver.warn(f"round {r + 1}/{n}: rejected the result of {site}: {reason}")
        needed = max(1, settings.min_clients)
        if len(accepted) < needed:
            problems = ([f"{site}: {reason}" for site, reason in rejected.items()]
                        + [f"{s}: {driver.missing_reason(s)}" for s in missing])
            message = (f"round {r + 1}/{n}: {len(accepted)} result(s) accepted, {needed} needed "
                       f"(min_clients); {'; '.join(problems) or _too_few(available, selected)}")
            history["error"] = message
            write_history(history_path, history)
            driver.fail(message)
            return None, history
        global_model = new_model
        strategy.observe({site: results[site].num_examples for site in accepted})
        location = driver.publish(global_model, r, final=r == n - 1)
        record = {
            "round": r,
            "seconds": round(time.time() - started, 2),
            "started_at": started,  # wall clock; with results_at and the sites' timing metrics this splits
            "results_at": results_at,  # the round (flaretune.bench.overhead)
            "global_model": location,
            "selected": list(selected),
            "sites": {site: results[site].record() for site in accepted},
            "rejected": rejected,
            "missing": missing,
            **driver.round_info(),
        }
        history["rounds"].append(record)
        write_history(history_path, history)
        if checkpoint is not None:
            checkpoint.save(r, store, global_model, strategy, rng, history)
        driver.info(f"round {r + 1}/{n} done in {record['seconds']:.0f}s; after local training: "
                    f"{summary(record['sites'])}")
    return global_model, history
