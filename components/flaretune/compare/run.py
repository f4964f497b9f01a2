"""Federated vs centralized vs local-only, on the same data and the same number of epochs."""

import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

from flaretune.compare.data import prepare
from flaretune.compare.report import write_plot
from flaretune.jobcfg import JobFolder
from flaretune.models.lora import PeftSpec

TASKS = ["train", "validate", "submit_model"]


def _say(message: str) -> None:
    print(message, flush=True)


def _spec_from_job(job: JobFolder, labels: List[str], model: Optional[str]) -> PeftSpec:
    args = dict(job.persistor_args)
    args["labels"] = labels
    if model:
        args["model_name"] = model
    args.pop("output_dir", None)
    return PeftSpec(**args)


def torch_threads() -> int:
    """Threads for the in-process baselines: the idle cores, at least one.

    Oversubscribed OpenMP threads spin against each other: on this 2-core machine with another busy
    process, 2 threads ran a MiniLM step 3.4x slower than 1 thread did (3.8 s vs 1.1 s).
    """
    cores = os.cpu_count() or 1
    try:  # runnable tasks right now, ourselves included ("R/T" in /proc/loadavg); the averages lag
        busy = int(open("/proc/loadavg").read().split()[3].split("/")[0]) - 1
    except (OSError, IndexError, ValueError):
        busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(cores, cores - busy))


def _fit_and_score(spec, train_sentences, test_encoded, hp, label: str) -> dict:
    """Train a fresh adapter from the job's spec and score it on the shared (already encoded) test set."""
    from flaretune.train.ner_trainer import NerTrainer

    trainer = NerTrainer(spec, max_length=hp["max_length"], num_threads=torch_threads())
    encoded = trainer.encode(train_sentences)
    total_epochs = hp["epochs"]

    total_steps = max(1, round(total_epochs * -(-len(encoded) // hp["batch_size"])))

    def on_step(step, loss, every=max(1, total_steps // 5)):
        if step % every == 0 and step < total_steps:
            _say(f"    {label}: step {step}/{total_steps}, loss {loss:.4f}")

    started = time.time()
    trainer.fit(encoded, epochs=total_epochs, learning_rate=hp["lr"], batch_size=hp["batch_size"], seed=hp["seed"],
                on_step=on_step, warmup_ratio=hp["warmup_ratio"], schedule=hp["schedule"])
    scores = trainer.evaluate(test_encoded)
    _say(f"  {label}: {len(train_sentences)} sentences × {total_epochs:g} epochs in {time.time() - started:.0f}s "
         f"-> test F1 {scores['f1']:.4f} ({scores['n_predicted']} entities predicted, {scores['n_gold']} gold)")
    _warn_collapse(label, scores)
    return scores


def _warn_collapse(label: str, scores: dict) -> None:
    if scores.get("collapse"):
        _say(f"  WARNING {label}: {scores['collapse']}")


def _setting(scores: dict) -> dict:
    """What report.json keeps of one setting's test scores."""
    return {"test": scores["f1"], "per_type": _per_type(scores), "n_predicted": scores["n_predicted"],
            "n_gold": scores["n_gold"], "collapse": scores.get("collapse")}


def compare(job_dir, out_dir, sites: int = 3, rounds: Optional[int] = None, seed: int = 0, skew: float = 0.8,
            train_file=None, test_file=None, quantize: Optional[str] = None, model: Optional[str] = None,
            style: str = "notes", dp_epsilon: Optional[float] = None) -> dict:
    from safetensors.numpy import load_file

    from flaretune.simulate import run_simulator
    from flaretune.train.ner_trainer import NerTrainer
    from flaretune.wire import update_wire_bytes

    started = time.time()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    job = JobFolder(job_dir)
    rounds = rounds or job.num_rounds
    _say(f"[1/5] data: preparing {sites} sites under {out / 'data'}")
    data = prepare(out, sites, seed, skew, train_file, test_file, style=style)
    _say(f"  {data.description}")
    for name, part in data.site_train.items():
        _say(f"  {name}: {len(part)} training sentences")
    _say(f"  shared test set: {len(data.test)} sentences")

    spec = _spec_from_job(job, data.labels, model)
    ex = job.executor_args
    epochs_per_round = float(ex.get("local_epochs", 1))
    hp = {"lr": float(ex.get("learning_rate", 1e-3)), "batch_size": int(ex.get("batch_size", 16)),
          "max_length": int(ex.get("max_length", 64)), "seed": seed, "epochs": rounds * epochs_per_round,
          "warmup_ratio": float(ex.get("warmup_ratio", 0.0)), "schedule": str(ex.get("lr_schedule", "constant"))}

    # -- federated ------------------------------------------------------------------------------
    job.set_rounds(rounds)
    job.set_sites(sites)
    job.persistor_args.update({"labels": data.labels, "model_name": spec.model_name, "seed": seed})
    ex.update({"data_path": str(data.root / "{site_name}"), "seed": seed,
               "num_threads": max(1, (os.cpu_count() or 2) // sites)})
    if quantize is not None:
        job.set_quantization(quantize, TASKS)
    dp = _dp_sgd(ex, rounds, epochs_per_round, dp_epsilon) if dp_epsilon else None
    quantization = job.quantization()
    run_job = job.write(out / "job")
    _say(f"[2/5] federated: {rounds} rounds × {epochs_per_round:g} local epochs, {sites} sites, "
         f"aggregator {job.workflow_args.get('aggregator', 'fedavg')}, quantization {quantization or 'none'} "
         f"(FLARE simulator, log {out / 'federated.log'})")
    fed_started = time.time()
    run_dir = run_simulator(run_job, out / "workspace", sites, log_file=out / "federated.log")
    fed_seconds = time.time() - fed_started
    global_dir = run_dir / "global_model"

    evaluator = NerTrainer(spec, max_length=hp["max_length"], num_threads=torch_threads())
    test_encoded = evaluator.encode(data.test)
    per_round, fed_scores = [], None
    for round_number in range(rounds):
        evaluator.set_params(load_file(str(global_dir / f"round-{round_number:03d}.safetensors")))
        fed_scores = evaluator.evaluate(test_encoded)  # the last round's are the federated model's scores
        per_round.append(fed_scores["f1"])
    _say(f"  federated: {fed_seconds:.0f}s, test F1 per round {', '.join(f'{f:.3f}' for f in per_round)} "
         f"({fed_scores['n_predicted']} entities predicted, {fed_scores['n_gold']} gold)")
    _warn_collapse("federated", fed_scores)
    adapter = evaluator.get_params()
    wire = update_wire_bytes({k: v.numpy() for k, v in adapter.items()}, quantization)
    full_bytes = 4 * sum(p.numel() for p in evaluator.model.parameters())

    _say(f"[3/5] centralized: all sites' training data pooled, {hp['epochs']:g} epochs")
    pooled = [s for part in data.site_train.values() for s in part]
    central = _fit_and_score(spec, pooled, test_encoded, hp, "centralized")

    _say(f"[4/5] local-only: each site alone, {hp['epochs']:g} epochs")
    local: Dict[str, dict] = {}
    for name, part in data.site_train.items():
        local[name] = _fit_and_score(spec, part, test_encoded, hp, f"local-only {name}")
    local_mean = sum(s["f1"] for s in local.values()) / len(local)

    report = {
        "dp": dp,
        "scenario": "clinical_ner",
        "metric": "entity_f1",
        "federated": {**_setting(fed_scores), "per_round": per_round, "seconds": round(fed_seconds, 1)},
        "centralized": _setting(central),
        "local_only": {"per_site": {n: s["f1"] for n, s in local.items()}, "mean": local_mean,
                       "sites": {n: _setting(s) for n, s in local.items()}},
        "collapse": [f"{name}: {text}" for name, text in _collapses(fed_scores, central, local)],
        "bytes_per_round_per_client": wire,
        "full_model_bytes": full_bytes,
        "rounds": rounds,
        "wall_s": round(time.time() - started, 1),
        "sites": sites,
        "seed": seed,
        "model": spec.model_name,
        "quantization": quantization or "none",
        "data": data.description,
        "adapter_dir": str(global_dir / "adapter"),
    }
    _say("[5/5] report")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    write_plot(report, out / "report.png")
    return report


DP_DELTA = 1e-5
DP_SAMPLE_RATE = 0.05  # each record's chance to be in a DP-SGD lot: about 7-18 records a lot at the demo's sites
DP_CLIP = 1.0


def _dp_sgd(executor_args: dict, rounds: int, epochs_per_round: float, epsilon: float) -> dict:
    """Make the federated sites train with DP-SGD at (epsilon, 1e-5) over the whole job; the baselines stay
    non-private. An "epoch" of Poisson sampling at rate q is 1/q steps; the noise multiplier is the one that
    spends exactly the budget over every round's steps (``noise_for_epsilon``)."""
    from flaretune.privacy import noise_for_epsilon

    steps_per_round = max(1, round(epochs_per_round / DP_SAMPLE_RATE))
    z = noise_for_epsilon(epsilon, DP_SAMPLE_RATE, steps_per_round * rounds, DP_DELTA)
    executor_args.update({
        "train_step": "dpsgd", "max_steps": steps_per_round, "dp_epsilon_budget": epsilon, "dp_delta": DP_DELTA,
        "train_step_args": {"noise_multiplier": z, "max_grad_norm": DP_CLIP, "sample_rate": DP_SAMPLE_RATE},
    })
    _say(f"  DP-SGD at the sites: epsilon {epsilon:g}, delta {DP_DELTA:g}: noise multiplier {z:.4f}, sample rate "
         f"{DP_SAMPLE_RATE:g}, clip {DP_CLIP:g}, {steps_per_round} steps a round")
    return {"epsilon": epsilon, "delta": DP_DELTA, "noise_multiplier": z, "sample_rate": DP_SAMPLE_RATE,
            "clip": DP_CLIP, "steps_per_round": steps_per_round}


def _collapses(fed: dict, central: dict, local: Dict[str, dict]):
    settings = [("federated", fed), ("centralized", central)] + [(f"local-only {n}", s) for n, s in local.items()]
    return [(name, s["collapse"]) for name, s in settings if s.get("collapse")]


def _per_type(scores: dict) -> Dict[str, float]:
    return {name: values["f1"] for name, values in scores["per_type"].items()}
