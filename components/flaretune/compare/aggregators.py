"""``flaretune compare JOB --aggregators a,b,...``: every server strategy on the same data, seed and budget.

Each aggregator runs the job folder in the FLARE simulator; the rows of ``aggregators.json`` are
``aggregator``, ``accuracy`` (the scenario's headline metric, under that name and as ``test``),
``macro_f1`` (where the scenario has one), ``rounds_to_95pct_of_best``, ``bytes_per_round_per_client``,
``wall_s`` and ``server_lr`` with ``server_lr_rule`` saying where it came from.

Server learning rates (the documented rule):

* fedavg, fedprox: no server learning rate (the mean is the model); fedprox uses the job's
  ``fedprox_mu``, or 0.01 when the job has none.
* fedavgm: 1.0 with momentum 0.9 (Hsu et al., 2019, arXiv:1909.06335), no sweep.
* fedadagrad, fedadam, fedyogi: a sweep over :data:`SERVER_LR_GRID` (Reddi et al., 2021, arXiv:2003.00295
  tune on a log grid too), each candidate run in process — the same trainer, local budget and
  strategy code as the job, without FLARE — on 90% of every site's training data and scored on the
  pooled 10% held out (a validation split carved from training data; the test set is never seen).
  The best validation score wins, ties to the smaller rate. Round 1 is the same for every candidate
  (same start, data and seeds), so it is trained once and shared.
"""

import json
import random
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from flaretune.compare.run import DEFAULT_FEDPROX_MU, Options, Run, _say, baselines, federated, start, torch_threads
from flaretune.errors import ConfigError

ADAPTIVE = ("fedadagrad", "fedadam", "fedyogi")
SERVER_LR_GRID = (1e-3, 1e-2, 1e-1)
FEDAVGM_LR, FEDAVGM_MOMENTUM = 1.0, 0.9
VALIDATION_FRACTION = 0.1


def rounds_to_fraction(per_round: Sequence[float], best: float, fraction: float = 0.95) -> Optional[int]:
    """The first round (1-based) whose score reaches ``fraction × best``; None if none does."""
    for index, score in enumerate(per_round, start=1):
        if score >= fraction * best:
            return index
    return None


def validation_split(records: List, seed: int, fraction: float = VALIDATION_FRACTION):
    """``(train, validation)``: a seeded ``fraction`` of ``records`` (at least one) held out."""
    order = list(range(len(records)))
    random.Random(f"flaretune-val:{seed}").shuffle(order)
    held = set(order[: max(1, int(len(records) * fraction))]) if len(records) > 1 else set()
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


class InProcessFederation:
    """The job's rounds without FLARE: each site trains from the global adapter, the strategy aggregates.

    Used only to choose server learning rates on a validation split; the table's figures come from
    the simulator runs.
    """

    def __init__(self, run: Run):
        self.run = run
        self.trainer = run.scenario.make_trainer(run.spec, run.executor_args, torch_threads())
        self.sites, self.validation = {}, []
        for name, records in run.data.site_train.items():
            train, held = validation_split(records, run.options.seed)
            self.sites[name] = self.trainer.encode(train)
            self.validation.extend(held)
        self.validation_encoded = self.trainer.encode(self.validation)
        self.start = {k: v.numpy() for k, v in self.trainer.get_params().items()}
        self._first_round: Optional[Dict] = None

    def _local(self, global_params, round_index: int) -> Dict:
        from flaretune.train.loop import step_for

        hp, results = self.run.hp, {}
        for name, encoded in self.sites.items():
            self.trainer.set_params(global_params)
            step = step_for("backprop", learning_rate=hp["lr"], warmup_ratio=hp["warmup_ratio"],
                            schedule=hp["schedule"], round_index=round_index, num_rounds=self.run.rounds)
            self.trainer.fit(encoded, epochs=hp["epochs_per_round"], batch_size=hp["batch_size"],
                             seed=hp["seed"] + round_index, max_steps=hp["max_steps"], step=step)
            results[name] = ({k: v.numpy() for k, v in self.trainer.get_params().items()}, len(encoded))
        return results

    def score(self, aggregator: str, **strategy_args) -> float:
        """Validation score of the global model after the job's rounds with this strategy."""
        from flaretune.aggregation.strategy import make_strategy
        from flaretune.aggregation.validation import aggregate_round

        strategy = make_strategy(aggregator, **strategy_args)
        global_params = dict(self.start)
        for round_index in range(self.run.rounds):
            if round_index == 0:
                if self._first_round is None:
                    self._first_round = self._local(global_params, 0)
                results = self._first_round
            else:
                results = self._local(global_params, round_index)
            global_params, _, rejected = aggregate_round(strategy, global_params, results)
            if rejected:
                raise ConfigError(f"server lr sweep: {aggregator} {strategy_args}: results rejected: {rejected}")
        self.trainer.set_params(global_params)
        return float(self.trainer.evaluate(self.validation_encoded)[self.run.scenario.headline])


def choose_server_lr(federation: InProcessFederation, aggregator: str) -> Dict[str, object]:
    scores = {}
    for lr in SERVER_LR_GRID:
        started = time.time()
        scores[lr] = federation.score(aggregator, server_lr=lr)
        _say(f"    {aggregator} server lr {lr:g}: validation {federation.run.scenario.metric} {scores[lr]:.4f} "
             f"({time.time() - started:.0f}s)")
    best = max(SERVER_LR_GRID, key=lambda lr: (scores[lr], -lr))
    return {"server_lr": best, "server_lr_rule": f"validation sweep {list(SERVER_LR_GRID)}",
            "validation": {f"{lr:g}": round(s, 4) for lr, s in scores.items()}}


def _workflow(run: Run, aggregator: str, federation_factory) -> Dict[str, object]:
    """The controller arguments for ``aggregator`` and the row fields saying how they were chosen."""
    if aggregator == "fedavg":
        return {"aggregator": aggregator, "server_lr": None, "server_lr_rule": "none (the mean is the model)"}
    if aggregator == "fedprox":
        mu = float(run.job.workflow_args.get("fedprox_mu") or 0) or DEFAULT_FEDPROX_MU
        return {"aggregator": aggregator, "fedprox_mu": mu, "server_lr": None,
                "server_lr_rule": f"none (fedprox mu {mu:g})"}
    if aggregator == "fedavgm":
        return {"aggregator": aggregator, "server_lr": FEDAVGM_LR, "beta1": FEDAVGM_MOMENTUM,
                "server_lr_rule": f"fixed {FEDAVGM_LR:g}, momentum {FEDAVGM_MOMENTUM:g}"}
    if aggregator in ADAPTIVE:
        _say(f"  {aggregator}: choosing the server learning rate on a validation split")
        return {"aggregator": aggregator, **choose_server_lr(federation_factory(), aggregator)}
    return {"aggregator": aggregator, "server_lr": run.job.workflow_args.get("server_lr"),
            "server_lr_rule": "the job's"}


def compare_aggregators(job_dir, out_dir, aggregators: Sequence[str], options: Options,
                        with_baselines: bool = True) -> List[dict]:
    """Every aggregator through the simulator on the same data and seed; writes aggregators.json/.png."""
    from flaretune.aggregation.strategy import strategy_names

    unknown = [a for a in aggregators if a not in strategy_names()]
    if unknown:
        raise ConfigError(f"Invalid aggregator {unknown[0]!r}; valid: {', '.join(strategy_names())}")
    from flaretune.compare.scenarios import scenario_for
    from flaretune.jobcfg import JobFolder

    started = time.time()
    n_baselines = (3 if scenario_for(JobFolder(job_dir)).zero_shot else 2) if with_baselines else 0
    steps = 1 + len(aggregators) + n_baselines
    run = start(job_dir, out_dir, options, steps)
    federation: List[InProcessFederation] = []

    def federation_factory():
        if not federation:
            federation.append(InProcessFederation(run))
        return federation[0]

    rows = []
    for index, aggregator in enumerate(aggregators, start=2):
        agg_started = time.time()
        chosen = _workflow(run, aggregator, federation_factory)
        workflow = {k: v for k, v in chosen.items() if k not in ("server_lr_rule", "validation") and v is not None}
        fed = federated(run, run.out / aggregator, f"[{index}/{steps}]", workflow)
        setting = fed["setting"]
        rows.append({
            "aggregator": aggregator, "accuracy": setting["test"], "test": setting["test"],
            "macro_f1": setting.get("macro_f1"), "per_round": setting["per_round"],
            "bytes_per_round_per_client": fed["bytes_per_round_per_client"],
            "wall_s": round(time.time() - agg_started, 1), "simulator_s": setting["seconds"],
            "server_lr": chosen.get("server_lr"), "server_lr_rule": chosen["server_lr_rule"],
            **({"validation": chosen["validation"]} if "validation" in chosen else {}),
            **({"fedprox_mu": chosen["fedprox_mu"]} if "fedprox_mu" in chosen else {}),
            "collapse": setting.get("collapse"),
        })
    best = max(max(r["per_round"]) for r in rows)
    for row in rows:
        row["rounds_to_95pct_of_best"] = rounds_to_fraction(row["per_round"], best)
    levels = _baseline_levels(run, len(aggregators) + 2, steps) if with_baselines else {}
    table = {"scenario": run.scenario.name, "metric": run.scenario.metric, "rounds": run.rounds,
             "sites": options.sites, "seed": options.seed, "model": run.spec.model_name, "data": run.data.description,
             "best": best, "rows": rows, "levels": levels, "wall_s": round(time.time() - started, 1)}
    (run.out / "aggregators.json").write_text(json.dumps(table, indent=2))
    write_aggregator_plot(table, run.out / "aggregators.png")
    return table


def _baseline_levels(run: Run, first_step: int, steps: int) -> Dict[str, float]:
    base = baselines(run, first_step, steps)
    headline = run.scenario.headline
    levels = {"centralized": float(base["centralized"][headline]),
              "local_only_mean": sum(float(s[headline]) for s in base["local"].values()) / len(base["local"])}
    if base["zero_shot"] is not None:
        levels["zero_shot"] = float(base["zero_shot"][headline])
    return levels


def table_lines(table: dict) -> List[str]:
    metric = table["metric"]
    lines = [f"{'aggregator':<12}{metric:>10}{'macro-F1':>10}{'rounds→95%':>12}{'bytes/round':>13}{'wall s':>8}  server lr"]
    for row in table["rows"]:
        f1 = f"{row['macro_f1']:.4f}" if row.get("macro_f1") is not None else "-"
        reach = row["rounds_to_95pct_of_best"] if row["rounds_to_95pct_of_best"] is not None else "never"
        lr = f"{row['server_lr']:g}" if row.get("server_lr") is not None else "-"
        lines.append(f"{row['aggregator']:<12}{row['accuracy']:>10.4f}{f1:>10}{reach!s:>12}"
                     f"{row['bytes_per_round_per_client']:>13,}{row['wall_s']:>8.0f}  {lr} ({row['server_lr_rule']})")
    for name, value in table.get("levels", {}).items():
        lines.append(f"{name.replace('_', ' ')}: {value:.4f}")
    return lines


def write_aggregator_plot(table: dict, path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for row in table["rows"]:
        rounds = list(range(1, len(row["per_round"]) + 1))
        ax.plot(rounds, row["per_round"], marker="o", label=row["aggregator"])
    styles = {"centralized": ("tab:green", "--"), "local_only_mean": ("tab:red", ":"), "zero_shot": ("tab:gray", "-.")}
    for name, value in table.get("levels", {}).items():
        color, line = styles.get(name, ("black", "-"))
        ax.axhline(value, color=color, linestyle=line, label=name.replace("_", " "))
    ax.set_xlabel("round")
    ax.set_ylabel(f"test {table['metric']}")
    ax.set_ylim(0, 1)
    ax.set_title(f"{table['scenario']}: aggregators, {table['model']}, {table['sites']} sites")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
