"""FedBuff's server loop (Nguyen et al., 2022, arXiv:2106.06639) with no round barrier — no FLARE import.

A controller (:class:`~flaretune.aggregation.fedbuff.FedBuffController`, or the benchmark's in-process sites)
is an :class:`AsyncDriver`: it hands ``train`` to one site and passes results back as they arrive. The loop
keeps every available site busy: a site that answers is given the current global model at once, whatever
the others are doing. Results are validated against the model each site trained from and buffered; every
``buffer_size`` accepted results make one server update (:func:`~flaretune.aggregation.buffer.apply_buffer`,
staleness-weighted, through the job's Strategy). The job ends after ``num_updates`` updates.

After every update :class:`~flaretune.aggregation.checkpoint.Checkpoint` saves the update count (as its
"round"), the global model, the strategy's state, the RNG and the history; a resumed job continues from
there with an empty buffer and every site idle (results buffered or in flight at the kill are lost).

``history.json``::

    {"strategy": "fedadam", "workflow": "fedbuff", "buffer_size": 2, "staleness": "sqrt",
     "dispatches": [{"site": "site-1", "version": 0, "seconds": 0.01}, ...],
     "rounds": [{"round": 0, "seconds": 3.2, "global_model": "...", "sites": [{"site": "site-2",
       "trained_from": 0, "staleness": 0, "weight": 1.0, "num_examples": 16, "metrics": {...}}, ...],
       "rejected": {}}], "final": {...}}

``rounds`` are the server updates, so the synchronous tools (and ``rounds[-1]``) read both workflows.
"""

import time
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from flaretune.aggregation.buffer import Buffered, apply_buffer
from flaretune.aggregation.rounds import RoundDriver, SiteResult, state_digest, write_history


class AsyncDriver(RoundDriver):
    """A :class:`RoundDriver` whose sites are asked one at a time and answer whenever they are done."""

    def train(self, round_number, sites, global_model, meta):  # the synchronous entry point is not used
        raise NotImplementedError("FedBuff hands out train with dispatch()")

    @abstractmethod
    def dispatch(self, site: str, version: int, global_model, meta: dict) -> None:
        """Send ``train`` with the global model of server update ``version`` to ``site``; do not wait."""

    @abstractmethod
    def next_result(self, timeout: float) -> Optional[Tuple[str, Optional[SiteResult]]]:
        """The next site that finished: ``(site, result)``, ``(site, None)`` if its task failed, or None when
        nothing arrived within ``timeout`` seconds."""


@dataclass
class BufferSettings:
    num_updates: int
    buffer_size: int
    weight: object  # staleness -> factor (flaretune.aggregation.buffer.staleness_weight)
    staleness: str = "sqrt"  # its name, for the history
    seed: int = 0


def run_buffered(driver: AsyncDriver, store, strategy, settings: BufferSettings, global_model,
                 history_path: Path, checkpoint=None, resume: Optional[dict] = None):
    """Server updates until ``num_updates``; ``(global model or None if stopped, history)``."""
    rng = np.random.default_rng(settings.seed)
    history = {"strategy": strategy.name, "workflow": "fedbuff", "buffer_size": settings.buffer_size,
               "staleness": settings.staleness, "dispatches": [], "rounds": [], "final": None}
    version = 0
    if resume is not None:
        global_model, history, version = resume["global_model"], resume["history"], resume["round"] + 1
        strategy.load_state_dict(resume["strategy"])
        rng.bit_generator.state = resume["rng"]
        history.setdefault("resumed", []).append(
            {"after_round": resume["round"], "from": resume["folder"], "strategy_step": strategy.step,
             "strategy_sha256": state_digest(strategy.state_dict())})
        driver.info(f"resuming after server update {version}/{settings.num_updates} from {resume['folder']}")
    n, started = settings.num_updates, time.time()
    models: Dict[int, dict] = {version: global_model}  # the models sites are training from
    busy: Dict[str, int] = {}  # site -> the version it is training from
    buffer: List[Buffered] = []
    last_update = started
    while version < n:
        if driver.aborted():
            driver.info(f"abort requested: stopping at server update {version}/{n}")
            return None, history
        free = [site for site in driver.available_clients() if site not in busy]
        if free:
            selected, meta = strategy.configure_round(version, free, rng)
            for site in selected:
                busy[site] = version
                history["dispatches"].append({"site": site, "version": version,
                                              "seconds": round(time.time() - started, 3)})
                driver.dispatch(site, version, global_model, meta)
        got = driver.next_result(timeout=0.5)
        if got is None:
            continue
        site, result = got
        trained_from = busy.pop(site, None)
        if trained_from is None or trained_from not in models:
            driver.warn(f"a result of {site} that no open train task asked for was dropped")
            continue
        if result is None:
            driver.warn(f"update {version + 1}/{n}: no result from {site}: {driver.missing_reason(site)}")
            continue
        base = models[trained_from]
        reason = strategy.validate(base, result.update, result.num_examples)
        if reason is not None:
            driver.warn(f"update {version + 1}/{n}: rejected the result of {site}: {reason}")
            history.setdefault("rejected", []).append({"site": site, "trained_from": trained_from, "reason": reason})
            continue
        buffer.append(Buffered(site, result.update, base, float(result.num_examples), trained_from,
                               result.metrics, result.upload_bytes))
        if len(buffer) < settings.buffer_size:
            continue
        new_model, used, rejected = apply_buffer(strategy, global_model, buffer, version, settings.weight)
        buffer = []
        for key, why in rejected.items():
            driver.warn(f"update {version + 1}/{n}: rejected the result of {key}: {why}")
        if not used:
            continue
        global_model = new_model
        strategy.observe({entry["site"]: entry["num_examples"] for entry in used})
        location = driver.publish(global_model, version, final=version == n - 1)
        now = time.time()
        record = {"round": version, "seconds": round(now - last_update, 2), "elapsed": round(now - started, 2),
                  "global_model": location, "sites": used, "rejected": rejected, **driver.round_info()}
        last_update = now
        history["rounds"].append(record)
        write_history(history_path, history)
        if checkpoint is not None:
            checkpoint.save(version, store, global_model, strategy, rng, history)
        version += 1
        models[version] = global_model
        for old in [v for v in models if v != version and v not in busy.values()]:
            del models[old]
        driver.info(f"server update {version}/{n}: " + ", ".join(
            f"{e['site']} (staleness {e['staleness']}, weight {e['weight']:.3f})" for e in used))
    return global_model, history
