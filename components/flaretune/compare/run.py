"""Federated vs centralized vs local-only (vs zero-shot), on the same data and the same training budget.

One flow for every scenario (:mod:`flaretune.compare.scenarios`): the federated setting is the job
folder run unchanged in the FLARE simulator; the baselines train in process with the same trainer,
hyper-parameters and learning-rate schedule, and every setting is scored on the shared test set by
the scenario's one evaluation function.

Budgets: a job that trains ``local_epochs`` per round gives each baseline ``rounds × local_epochs``
epochs over its data. A job capped at ``max_steps`` per round gives each local-only site the steps
it took in the federation (``rounds × max_steps``) and the centralized run the steps of all sites
together (``sites × rounds × max_steps``): every setting sees as many training examples as the
sites it stands for.
"""

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from flaretune.compare.report import write_plot
from flaretune.compare.scenarios import Scenario, scenario_for
from flaretune.jobcfg import JobFolder
from flaretune.models.lora import PeftSpec

TASKS = ["train", "validate", "submit_model"]
DEFAULT_FEDPROX_MU = 0.01  # --aggregator(s) fedprox on a job whose fedprox_mu is 0


def _say(message: str) -> None:
    print(message, flush=True)


@dataclass
class Options:
    """What the command line sets; ``None`` keeps what the job folder says."""

    sites: int = 3
    rounds: Optional[int] = None
    seed: int = 0
    skew: float = 0.8  # NER: entity-mix skew of the site split
    alpha: float = 0.5  # instructions: Dirichlet alpha over labels
    train: Optional[str] = None
    test: Optional[str] = None
    quantize: Optional[str] = None
    model: Optional[str] = None
    style: Optional[str] = None
    dp_epsilon: Optional[float] = None
    aggregator: Optional[str] = None
    server_lr: Optional[float] = None
    secure_aggregation: bool = False
    method: Optional[str] = None  # client method (flaretune.train.methods); None: the job's
    layers: Optional[str] = None  # the layers a layer-selecting method trains ('0,2', 'top2', 'every_other')
    learning_rate: Optional[float] = None  # every setting's learning rate (full weights want less than LoRA)


@dataclass
class Run:
    """One comparison's fixed parts: the job, its scenario and data, the spec and the baselines' budget."""

    job: JobFolder
    scenario: Scenario
    options: Options
    out: Path
    data: object
    spec: PeftSpec
    rounds: int
    hp: Dict[str, object]
    evaluator: object = None
    test_encoded: List = field(default_factory=list)

    @property
    def executor_args(self) -> dict:
        return self.job.executor_args


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


def _spec_from_job(job: JobFolder, scenario: Scenario, labels: List[str], options: Options) -> PeftSpec:
    args = dict(job.persistor_args)
    if scenario.labels_in_spec:
        args["labels"] = labels
    if options.model:
        args["model_name"] = options.model
    if options.method:
        args["method"] = options.method
    if options.layers:
        args["layers"] = options.layers
    args.pop("output_dir", None)
    args.pop("task", None)
    return PeftSpec(**args)


def start(job_dir, out_dir, options: Options, step_count: int) -> Run:
    """Read the job, prepare the data and the evaluator: what every setting of a comparison shares."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    job = JobFolder(job_dir)
    scenario = scenario_for(job)
    rounds = options.rounds or job.num_rounds
    _say(f"[1/{step_count}] data: preparing {options.sites} sites under {out / 'data'} (scenario {scenario.name})")
    data = scenario.prepare(out, options)
    _say(f"  {data.description}")
    for name, part in data.site_train.items():
        _say(f"  {name}: {len(part)} training records{_label_mix(part)}")
    _say(f"  shared test set: {len(data.test)} records{_label_mix(data.test)}")
    spec = _spec_from_job(job, scenario, data.labels, options)
    ex = job.executor_args
    if options.learning_rate:
        ex["learning_rate"] = options.learning_rate
    hp = {"lr": float(ex.get("learning_rate", 1e-3)), "batch_size": int(ex.get("batch_size", 16)),
          "seed": options.seed, "epochs_per_round": float(ex.get("local_epochs", 1)),
          "max_steps": int(ex.get("max_steps", 0) or 0),
          "warmup_ratio": float(ex.get("warmup_ratio", 0.0)), "schedule": str(ex.get("lr_schedule", "constant"))}
    run = Run(job, scenario, options, out, data, spec, rounds, hp)
    run.evaluator = scenario.make_trainer(spec, ex, torch_threads())
    run.test_encoded = run.evaluator.encode(data.test)
    return run


def _label_mix(records) -> str:
    """" (negative 52%, neutral 33%, ...)" for instruction records; empty for NER sentences."""
    from collections import Counter

    outputs = [getattr(r, "output", None) for r in records]
    if not outputs or any(o is None for o in outputs):
        return ""
    counts = Counter(o.strip().lower() for o in outputs)
    return " (" + ", ".join(f"{k} {v / len(outputs):.0%}" for k, v in sorted(counts.items())) + ")"


@dataclass
class FederatedJob:
    """The job folder a comparison runs (:func:`write_federated_job`) and what it was configured with."""

    path: Path
    job: JobFolder
    quantization: Optional[str]
    dp: Optional[dict]
    secagg: Optional[dict]


def write_federated_job(run: Run, folder: Path, workflow: Optional[dict] = None,
                        executor_args: Optional[dict] = None) -> FederatedJob:
    """The job folder with the comparison's sites, rounds, data, seed and options, written under ``folder``;
    the same folder runs in the simulator (:func:`federated`) or in POC (``flaretune bench overhead``).

    ``workflow`` overrides the controller's arguments (``aggregator``, ``server_lr``, ``fedprox_mu`` ...),
    ``executor_args`` the sites' (``max_steps`` ...)."""
    options, job = run.options, JobFolder(run.job.path)  # a fresh copy: each federated run edits its own
    job.set_rounds(run.rounds)
    job.set_sites(options.sites)
    job.persistor_args.update({"model_name": run.spec.model_name, "seed": options.seed})
    job.persistor_args.update({k: getattr(run.spec, k) for k in ("method", "layers") if getattr(run.spec, k)
                               not in (None, "lora")})
    if run.scenario.labels_in_spec:
        job.persistor_args["labels"] = run.data.labels
    ex = job.executor_args
    if options.learning_rate:
        ex["learning_rate"] = options.learning_rate
    ex.update({"data_path": str(run.data.root / "{site_name}"), "seed": options.seed,
               "num_threads": max(1, (os.cpu_count() or 2) // options.sites), **(executor_args or {})})
    job.workflow_args.update(workflow or {})
    if options.quantize is not None:
        job.set_quantization(options.quantize, TASKS)
    dp = _dp_sgd(ex, run.rounds, run.hp["epochs_per_round"], options.dp_epsilon) if options.dp_epsilon else None
    secagg = None
    if options.secure_aggregation:
        from flaretune.aggregation.secagg import enable_secure_aggregation

        secagg = enable_secure_aggregation(job, ["train"])
    folder.mkdir(parents=True, exist_ok=True)
    return FederatedJob(job.write(folder / "job"), job, job.quantization(), dp, secagg)


def federated(run: Run, folder: Path, step: str, workflow: Optional[dict] = None) -> dict:
    """The job folder in the FLARE simulator under ``folder``; every round's global model scored on the test set."""
    from safetensors.numpy import load_file

    from flaretune.simulate import run_simulator
    from flaretune.wire import update_wire_bytes

    written = write_federated_job(run, folder, workflow)
    job, run_job, quantization, dp, secagg = written.job, written.path, written.quantization, written.dp, written.secagg
    options = run.options
    budget = (f"{run.hp['max_steps']} local steps" if run.hp["max_steps"] else
              f"{run.hp['epochs_per_round']:g} local epochs")
    name = job.workflow_args.get("aggregator", "fedavg")
    lr = job.workflow_args.get("server_lr")
    _say(f"{step} federated: {run.rounds} rounds × {budget}, {options.sites} sites, method {run.spec.method}"
         f"{f' (layers {run.spec.layers})' if run.spec.layers else ''}, aggregator {name}"
         f"{f' (server lr {lr:g})' if lr is not None and name not in ('fedavg', 'fedprox') else ''}, "
         f"quantization {quantization or 'none'} (FLARE simulator, log {folder / 'federated.log'})")
    started = time.time()
    run_dir = run_simulator(run_job, folder / "workspace", options.sites, log_file=folder / "federated.log")
    seconds = time.time() - started
    global_dir = run_dir / "global_model"
    per_round, per_round_scores = [], []
    for round_number in range(run.rounds):
        run.evaluator.set_params(load_file(str(global_dir / f"round-{round_number:03d}.safetensors")))
        scores = run.evaluator.evaluate(run.test_encoded)
        per_round_scores.append(scores)
        per_round.append(float(scores[run.scenario.headline]))
        _say(f"  round {round_number + 1}/{run.rounds}: {run.scenario.describe(scores)}")
    final = per_round_scores[-1]
    _say(f"  federated: {seconds:.0f}s in the simulator; {run.scenario.describe(final)}")
    _warn_collapse("federated", final)
    adapter = {k: v.numpy() for k, v in run.evaluator.get_params().items()}
    if secagg is None:
        wire = update_wire_bytes(adapter, quantization)
    else:  # every value (and the weight) as one fixed-point integer, plus the protocol's own messages
        wire = _secagg_wire_bytes(adapter, secagg, global_dir)
        secagg["bytes_per_round_per_client"] = wire
    return {
        **site_costs(global_dir / "history.json"),
        "setting": {**run.scenario.setting(final), "per_round": per_round, "seconds": round(seconds, 1)},
        "per_round_scores": per_round_scores, "scores": final, "bytes_per_round_per_client": wire,
        "quantization": quantization or "none", "aggregator": name, "server_lr": lr, "dp": dp,
        "adapter_dir": str(global_dir / "adapter"), "seconds": seconds, "secure_aggregation": secagg,
    }


def site_costs(history_file: Path) -> dict:
    """``peak_rss_mb``: the largest peak RSS any site process reported (``history.json``'s round metrics);
    ``seconds_per_round``: the mean of the rounds' seconds (send, train at the sites, aggregate);
    ``flare_overhead``: the share of the rounds' time that was not the sites' evaluation and training
    (:mod:`flaretune.bench.overhead`; ``None`` when the sites sent no timing, e.g. under a DP filter)."""
    history = json.loads(history_file.read_text()) if history_file.is_file() else {}
    rounds = history.get("rounds", [])
    peaks = [float(site["metrics"]["peak_rss_mb"]) for r in rounds for site in r.get("sites", {}).values()
             if "peak_rss_mb" in (site.get("metrics") or {})]
    seconds = [float(r["seconds"]) for r in rounds if "seconds" in r]
    from flaretune.bench.overhead import overhead_of

    return {"peak_rss_mb": max(peaks) if peaks else None,
            "seconds_per_round": round(sum(seconds) / len(seconds), 2) if seconds else None,
            "flare_overhead": overhead_of(history_file)}


def _secagg_wire_bytes(adapter: dict, secagg: dict, global_dir: Path) -> int:
    """Masked upload (one ``modulus_bits`` integer per value, and one for the weight) plus the mean per-site
    bytes of the key, share and unmask answers that ``history.json`` recorded per round."""
    n_values = sum(int(v.size) for v in adapter.values()) + 1
    masked = n_values * secagg["modulus_bits"] // 8
    history = json.loads((global_dir / "history.json").read_text()) if (global_dir / "history.json").is_file() else {}
    protocol = [sum(r["secure_aggregation"]["protocol_bytes_up"].values()) / max(1, len(r["secure_aggregation"]["protocol_bytes_up"]))
                for r in history.get("rounds", []) if "secure_aggregation" in r]
    return int(masked + (sum(protocol) / len(protocol) if protocol else 0))


def _steps(run: Run, n_sites_pooled: int) -> int:
    """Baseline steps for a job capped at ``max_steps`` per round (0: the job trains by epochs)."""
    return run.hp["max_steps"] * run.rounds * n_sites_pooled if run.hp["max_steps"] else 0


def fit_and_score(run: Run, records, label: str, n_sites_pooled: int = 1) -> dict:
    """Train a fresh adapter from the job's spec on ``records`` and score it on the shared test set."""
    hp = run.hp
    trainer = run.scenario.make_trainer(run.spec, run.executor_args, torch_threads())
    encoded = trainer.encode(records)
    max_steps = _steps(run, n_sites_pooled)
    epochs = run.rounds * hp["epochs_per_round"]
    if max_steps:  # enough passes for the steps; the step count is what bounds the run
        epochs = max(epochs, -(-max_steps * hp["batch_size"] // max(1, len(encoded))))
    from flaretune.train.loop import total_steps

    total = total_steps(len(encoded), hp["batch_size"], epochs, max_steps)

    def on_step(step, loss, every=max(1, total // 5)):
        if step % every == 0 and step < total:
            _say(f"    {label}: step {step}/{total}, loss {loss:.4f}")

    started = time.time()
    trainer.fit(encoded, epochs=epochs, learning_rate=hp["lr"], batch_size=hp["batch_size"], seed=hp["seed"],
                max_steps=max_steps, on_step=on_step, warmup_ratio=hp["warmup_ratio"], schedule=hp["schedule"])
    scores = trainer.evaluate(run.test_encoded)
    budget = f"{total} steps" if max_steps else f"{epochs:g} epochs"
    _say(f"  {label}: {len(records)} records × {budget} in {time.time() - started:.0f}s -> "
         f"{run.scenario.describe(scores)}")
    _warn_collapse(label, scores)
    return scores


def zero_shot(run: Run) -> Optional[dict]:
    """The base model without tuning (a fresh adapter is the identity), scored by the same function."""
    if not run.scenario.zero_shot:
        return None
    trainer = run.scenario.make_trainer(run.spec, run.executor_args, torch_threads())
    scores = trainer.evaluate(run.test_encoded)
    _say(f"  zero-shot: {run.scenario.describe(scores)}")
    return scores


def baselines(run: Run, first_step: int, step_count: int) -> dict:
    """Centralized (all sites pooled), local-only (each site alone) and, where meaningful, zero-shot."""
    budget = (f"{_steps(run, len(run.data.site_train))} steps" if run.hp["max_steps"] else
              f"{run.rounds * run.hp['epochs_per_round']:g} epochs")
    _say(f"[{first_step}/{step_count}] centralized: all sites' training data pooled, {budget}")
    pooled = [r for part in run.data.site_train.values() for r in part]
    central = fit_and_score(run, pooled, "centralized", n_sites_pooled=len(run.data.site_train))
    local_budget = f"{_steps(run, 1)} steps" if run.hp["max_steps"] else budget
    _say(f"[{first_step + 1}/{step_count}] local-only: each site alone, {local_budget}")
    local = {name: fit_and_score(run, part, f"local-only {name}") for name, part in run.data.site_train.items()}
    zero = None
    if run.scenario.zero_shot:
        _say(f"[{first_step + 2}/{step_count}] zero-shot: the base model, untuned")
        zero = zero_shot(run)
    return {"centralized": central, "local": local, "zero_shot": zero}


def compare(job_dir, out_dir, sites: int = 3, rounds: Optional[int] = None, seed: int = 0, skew: float = 0.8,
            train_file=None, test_file=None, quantize: Optional[str] = None, model: Optional[str] = None,
            style: Optional[str] = None, dp_epsilon: Optional[float] = None, alpha: float = 0.5,
            aggregator: Optional[str] = None, server_lr: Optional[float] = None,
            secure_aggregation: bool = False, method: Optional[str] = None, layers: Optional[str] = None,
            learning_rate: Optional[float] = None) -> dict:
    """The whole comparison; writes ``report.json`` and ``report.png`` under ``out_dir``."""
    options = Options(sites, rounds, seed, skew, alpha, train_file, test_file, quantize, model, style, dp_epsilon,
                      aggregator, server_lr, secure_aggregation, method, layers, learning_rate)
    started = time.time()
    probe = scenario_for(JobFolder(job_dir))
    steps = 6 if probe.zero_shot else 5
    run = start(job_dir, out_dir, options, steps)
    workflow = {key: value for key, value in (("aggregator", aggregator), ("server_lr", server_lr)) if value is not None}
    if aggregator == "fedprox" and not float(run.job.workflow_args.get("fedprox_mu") or 0):
        workflow["fedprox_mu"] = DEFAULT_FEDPROX_MU  # the jobs ship mu 0 (FedAvg); FedProx needs mu > 0
    fed = federated(run, run.out, f"[2/{steps}]", workflow)
    base = baselines(run, 3, steps)
    _say(f"[{steps}/{steps}] report")
    report = build_report(run, fed, base, time.time() - started)
    if run.scenario.extend is not None:  # split_ner: federated LoRA beside it, per-step costs of a site
        report.update(run.scenario.extend(run, fed))
    (run.out / "report.json").write_text(json.dumps(report, indent=2))
    write_plot(report, run.out / "report.png")
    return report


def build_report(run: Run, fed: dict, base: dict, wall_s: float) -> dict:
    scenario, local = run.scenario, base["local"]
    local_mean = sum(float(s[scenario.headline]) for s in local.values()) / len(local)
    report = {
        "dp": fed["dp"],
        "scenario": scenario.name,
        "metric": scenario.metric,
        "federated": fed["setting"],
        "centralized": scenario.setting(base["centralized"]),
        "local_only": {"per_site": {n: float(s[scenario.headline]) for n, s in local.items()}, "mean": local_mean,
                       "sites": {n: scenario.setting(s) for n, s in local.items()}},
        "collapse": [f"{name}: {text}" for name, text in _collapses(fed["scores"], base["centralized"], local)],
        "bytes_per_round_per_client": fed["bytes_per_round_per_client"],
        "full_model_bytes": 4 * sum(p.numel() for p in run.evaluator.model.parameters()),
        "rounds": run.rounds,
        "wall_s": round(wall_s, 1),
        "sites": run.options.sites,
        "seed": run.options.seed,
        "model": run.spec.model_name,
        "aggregator": fed["aggregator"],
        "server_lr": fed["server_lr"],
        "quantization": fed["quantization"],
        "secure_aggregation": fed["secure_aggregation"],
        "data": run.data.description,
        "adapter_dir": fed["adapter_dir"],
        "method": run.spec.method,
        "layers": run.spec.layers,
        "trainable_params": run.evaluator.trainable_count(),
        "peak_rss_mb": fed.get("peak_rss_mb"),
        "seconds_per_round": fed.get("seconds_per_round"),
        "flare_overhead": fed.get("flare_overhead"),
        "learning_rate": run.hp["lr"],
    }
    if "macro_f1" in report["centralized"]:
        report["local_only"]["macro_f1_mean"] = sum(s["macro_f1"] for s in report["local_only"]["sites"].values()) / len(local)
    if base["zero_shot"] is not None:
        zero = scenario.setting(base["zero_shot"])
        report["zero_shot"] = {"test": zero["test"], "macro_f1": zero.get("macro_f1"), "predicted": zero.get("predicted")}
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


def _warn_collapse(label: str, scores: dict) -> None:
    if scores.get("collapse"):
        _say(f"  WARNING {label}: {scores['collapse']}")


def _collapses(fed: dict, central: dict, local: Dict[str, dict]):
    settings = [("federated", fed), ("centralized", central)] + [(f"local-only {n}", s) for n, s in local.items()]
    return [(name, s["collapse"]) for name, s in settings if s.get("collapse")]
