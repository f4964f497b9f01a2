"""What ``flaretune compare jobs/split_ner`` adds to the report: federated LoRA on the same data, and per-step costs.

The split job (:mod:`flaretune.split`) is the report's ``federated`` setting. Beside it this runs
``jobs/clinical_ner`` (federated LoRA, FedAvg) in the simulator with the same sites, rounds, spec, seed,
learning rate, batch size and schedule, float32 both ways as the split job's cut tensors travel, and
reports for both, per site and training step:

* ``bytes_per_step``: split: the cut tensors of a batch, both directions (activations and mask up,
  activations down, gradient up, gradient down), as the sites measured them; federated LoRA: the adapter
  down and up once a round, divided by the round's steps. (Split also moves its client parts once a
  round for FL-GLM's averaging: ``client_parts_bytes_per_round``.)
* ``seconds_per_step``: the site's wall time of a step (split: including the server's middle and the
  messages; LoRA: local training only).
* ``peak_rss_mb``: the largest peak resident memory of a site's process (the simulator runs each site in
  its own process).
"""

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Dict

from flaretune.errors import ConfigError

LORA_JOB = Path(__file__).resolve().parents[3] / "jobs" / "clinical_ner"
TASKS = ["train", "validate", "submit_model"]


def _history(run_dir: Path) -> list:
    return json.loads((Path(run_dir) / "global_model" / "history.json").read_text())["rounds"]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def split_costs(run_dir: Path) -> Dict[str, float]:
    """Per-step figures of the split job's sites, from its ``history.json`` (every round, every site)."""
    stats = [st for record in _history(run_dir) for st in record["sites"].values()]
    return {"bytes_per_step": _mean(s["bytes_per_step"] for s in stats),
            "seconds_per_step": _mean(s["seconds_per_step"] for s in stats),
            "peak_rss_mb": max(s["peak_rss_mb"] for s in stats)}


def lora_costs(run_dir: Path, upload_bytes: int, steps_per_round: float) -> Dict[str, float]:
    """Per-step figures of federated LoRA's sites: adapter down and up a round over the round's steps."""
    metrics = [s["metrics"] for record in _history(run_dir) for s in record["sites"].values()]
    return {"bytes_per_step": 2 * upload_bytes / steps_per_round,
            "seconds_per_step": _mean(m["seconds_per_step"] for m in metrics if "seconds_per_step" in m),
            "peak_rss_mb": max(m["peak_rss_mb"] for m in metrics)}


def _lora_job(run, folder: Path):
    from flaretune.jobcfg import JobFolder

    if not (LORA_JOB / "meta.json").is_file():
        raise ConfigError(f"{LORA_JOB}: the federated LoRA job to compare with is missing")
    job = JobFolder(LORA_JOB)
    spec = run.spec
    job.persistor_args.update({"lora_r": spec.lora_r, "lora_alpha": spec.lora_alpha, "lora_dropout": spec.lora_dropout,
                               "target_modules": list(spec.target_modules), "seed": spec.seed})
    split_args = run.executor_args
    job.executor_args.update({"learning_rate": run.hp["lr"], "batch_size": run.hp["batch_size"],
                              "max_steps": run.hp["max_steps"], "local_epochs": 1, "warmup_ratio": 0.0,
                              "lr_schedule": "constant", "max_length": int(split_args.get("max_length", 64))})
    job.set_quantization("none", TASKS)
    return JobFolder(job.write(folder / "job_src"))


def extend(run, fed: dict) -> dict:
    """Run federated LoRA on the comparison's data; the report's split and LoRA entries and the split
    site's ``bytes_per_step``, ``seconds_per_step``, ``peak_rss_mb``."""
    from flaretune.compare.run import _say, federated

    split_dir = Path(fed["adapter_dir"]).parents[1]
    split = split_costs(split_dir)
    folder = run.out / "federated_lora"
    lora_run = replace(run, job=_lora_job(run, folder))
    lora = federated(lora_run, folder, "[+] federated LoRA (jobs/clinical_ner, same data):")
    bs, cap = run.hp["batch_size"], run.hp["max_steps"]
    steps = _mean(min(cap, math.ceil(len(p) / bs)) if cap else math.ceil(len(p) / bs)
                  for p in run.data.site_train.values())
    lora_dir = Path(lora["adapter_dir"]).parents[1]
    lora_cost = lora_costs(lora_dir, lora["bytes_per_round_per_client"], steps)
    client_parts = _client_parts_bytes(split_dir)
    entries = {
        "split": {"test": fed["setting"]["test"], "per_round": fed["setting"]["per_round"], **split,
                  "client_parts_bytes_per_round": client_parts},
        "federated_lora": {"test": lora["setting"]["test"], "per_round": lora["setting"]["per_round"], **lora_cost,
                           "bytes_per_round_per_client": lora["bytes_per_round_per_client"]},
        **split,
        "bytes_per_round_per_client": int(split["bytes_per_step"] * steps + 2 * client_parts),
    }
    for name in ("split", "federated_lora"):
        e = entries[name]
        _say(f"  {name}: {run.scenario.metric_title} {e['test']:.4f}; per site and step {e['bytes_per_step'] / 1e3:.1f} kB, "
             f"{e['seconds_per_step']:.3f} s; peak RSS {e['peak_rss_mb']:.0f} MiB")
    return entries


def _client_parts_bytes(split_dir: Path) -> int:
    """float32 bytes of the client parts one site sends a round (the averaged ones come back as many)."""
    return int(json.loads((Path(split_dir) / "global_model" / "history.json").read_text())["cut"]["client_parts_bytes"])
