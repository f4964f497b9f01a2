"""Which clinical NER recipe learns: centralized and in-process federated LoRA runs over a small grid.

    .venv/bin/python -m flaretune.bench.ner_recipe --json out/recipe.json [--only NAME ...]

Trains MiniLM-L6 + LoRA (r 8, alpha 16, query/value + head, the job's PeftSpec) on the SYNTHETIC
hospitals with flaretune's own training loop (:mod:`flaretune.train.loop`) and strategies
(:mod:`flaretune.aggregation.strategy`), and prints after every round (centralized: every epoch) the
mean training loss, test entity F1 and the number of predicted vs gold test entities.

* Centralized settings pool every site's training data into one run of ``rounds × local_epochs`` epochs.
* Federated settings run the FLARE job's arithmetic without FLARE: each round every site starts from
  the global adapter, trains its local epochs, and the strategy aggregates the adapters weighted by
  example count (no quantization, so a few points can differ from ``flaretune compare``).

``span="job"`` stretches the learning-rate schedule over all rounds (what the job ships); ``"round"``
restarts warm-up and decay every round; ``restart_every`` re-creates the centralized optimizer every
so many epochs, as FLARE rounds re-create it.
"""

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional


@dataclass
class Setting:
    name: str
    lr: float
    warmup: float = 0.0  # fraction of the steps the schedule spans
    schedule: str = "constant"  # or "linear" (decay to 0 at the end of the span)
    federated: bool = False
    rounds: int = 5  # federated rounds; centralized: epochs
    local_epochs: float = 2.0  # federated only
    span: str = "job"  # "job": one schedule over every round; "round": each round has its own
    restart_every: int = 0  # centralized: epochs between optimizer re-creations (0: never)
    aggregator: str = "fedavg"
    aggregator_args: Dict[str, float] = field(default_factory=dict)
    dropout: float = 0.1
    style: str = "notes"
    freeze_lora_a: bool = False  # FFA-LoRA (Sun et al., 2024, arXiv:2403.12313): only B trains, so FedAvg is exact


GRID = [  # most telling first, so a cut-short run still answers the question
    Setting("shipped 5e-3 const", 5e-3, rounds=10),
    Setting("2e-3 warm10+lin", 2e-3, 0.1, "linear", rounds=10),
    Setting("5e-3 const restart/2ep", 5e-3, rounds=10, restart_every=2),
    Setting("fed fedavg 5x2 2e-3 warm10+lin", 2e-3, 0.1, "linear", federated=True),
    Setting("fed fedavg 5x2 per-round schedule", 2e-3, 0.1, "linear", federated=True, span="round"),
    Setting("fed fedavg 10x1 2e-3 warm10+lin", 2e-3, 0.1, "linear", federated=True, rounds=10, local_epochs=1),
    Setting("fed fedavgm 5x2 2e-3 warm10+lin", 2e-3, 0.1, "linear", federated=True, aggregator="fedavgm",
            aggregator_args={"server_lr": 1.0, "beta1": 0.5}),
    Setting("fed fedadam 5x2 2e-3 warm10+lin", 2e-3, 0.1, "linear", federated=True, aggregator="fedadam",
            aggregator_args={"server_lr": 3e-3}),
    Setting("fed fedprox 10x1 mu0.01", 2e-3, 0.1, "linear", federated=True, rounds=10, local_epochs=1,
            aggregator="fedprox", aggregator_args={"mu": 0.01}),
    Setting("fed fedadam 10x1 server-lr 1e-2", 2e-3, 0.1, "linear", federated=True, rounds=10, local_epochs=1,
            aggregator="fedadam", aggregator_args={"server_lr": 1e-2}),
    Setting("fed fedavg 5x2 ffa-lora 5e-3 warm10+lin", 5e-3, 0.1, "linear", federated=True, freeze_lora_a=True),
    Setting("templates 5e-3 const", 5e-3, rounds=10, style="templates"),
    Setting("templates 2e-3 warm10+lin", 2e-3, 0.1, "linear", rounds=10, style="templates"),
    Setting("1e-3 const", 1e-3, rounds=10),
]


def _sites(style: str, n_sites: int, seed: int):
    from flaretune.data.clinical import labels_for_style, make_hospital

    parts = [make_hospital(site, n_sites, seed=seed, style=style) for site in range(n_sites)]
    return [train for train, _ in parts], [s for _, test in parts for s in test], labels_for_style(style)


def _evaluate(trainer, encoded, losses: Optional[List[float]] = None) -> Dict[str, object]:
    """Test scores, plus what share of test words the model tags ``O`` (1.0 = collapsed)."""
    from flaretune.train import ner

    gold = [e.word_tags for e in encoded]
    predicted = ner.predict(trainer.model, encoded, trainer.id2label, trainer.pad_id)
    scores = ner.entity_scores(gold, predicted, losses)
    words = sum(len(p) for p in predicted)
    return {"f1": round(scores["f1"], 4), "n_predicted": scores["n_predicted"], "n_gold": scores["n_gold"],
            "share_O": round(sum(t == "O" for p in predicted for t in p) / max(1, words), 3),
            "per_type_f1": {k: round(v["f1"], 3) for k, v in scores["per_type"].items()},
            "collapse": scores["collapse"]}


def _step(setting: Setting, round_index: int, num_rounds: int, fedprox_mu: float = 0.0):
    from flaretune.train.loop import BackpropStep, step_for

    if setting.span == "round":
        round_index, num_rounds = 0, 1
    return step_for(BackpropStep.name, fedprox_mu, learning_rate=setting.lr, warmup_ratio=setting.warmup,
                    schedule=setting.schedule, round_index=round_index, num_rounds=num_rounds)


def _centralized(setting: Setting, trainer, sites, batch_size, seed, report) -> None:
    """One run over the pooled sites (a fresh optimizer every ``restart_every`` epochs); ``report`` per epoch."""
    from flaretune.train import loop

    pooled = [e for site in sites for e in site]
    per_epoch = loop.total_steps(len(pooled), batch_size, 1)
    lifetime = setting.restart_every or setting.rounds
    for start in range(0, setting.rounds, lifetime):
        epochs, losses = min(lifetime, setting.rounds - start), []

        def on_step(step, loss, start=start, losses=losses):
            losses.append(loss)
            if step % per_epoch == 0:
                report(start + step // per_epoch, sum(losses[-per_epoch:]) / per_epoch)
                trainer.model.train()  # evaluation switched dropout off

        trainer.fit(pooled, epochs=epochs, batch_size=batch_size, seed=seed + start, on_step=on_step,
                    step=_step(setting, 0, 1))


def _federated(setting: Setting, trainer, sites, batch_size, seed, report) -> None:
    """The job's rounds in process: every site from the global adapter, then the strategy; ``report`` per round."""
    import numpy as np

    from flaretune.aggregation.strategy import make_strategy
    from flaretune.aggregation.validation import aggregate_round
    from flaretune.keys import FEDPROX_MU

    strategy = make_strategy(setting.aggregator, **setting.aggregator_args)
    global_params = {k: v.numpy() for k, v in trainer.get_params().items()}
    names = [f"site-{index + 1}" for index in range(len(sites))]
    for r in range(setting.rounds):
        results, losses = {}, []
        _, meta = strategy.configure_round(r, names, np.random.default_rng(seed))
        for name, site in zip(names, sites):
            trainer.set_params(global_params)
            result = trainer.fit(site, epochs=setting.local_epochs, batch_size=batch_size, seed=seed + r,
                                 step=_step(setting, r, setting.rounds, meta.get(FEDPROX_MU, 0.0)))
            results[name] = ({k: v.numpy() for k, v in trainer.get_params().items()}, len(site))
            losses.append(result.mean_loss)
        global_params, _, rejected = aggregate_round(strategy, global_params, results)
        if rejected:
            raise RuntimeError(f"round {r + 1}: results rejected: {rejected}")
        trainer.set_params(global_params)
        report(r + 1, float(np.mean(losses)))


def run_setting(setting: Setting, batch_size: int, seed: int, data) -> dict:
    from flaretune.models.lora import PeftSpec
    from flaretune.train.ner_trainer import NerTrainer

    site_sentences, test, labels = data
    spec = PeftSpec(model_name="minilm-ner", labels=labels, lora_r=8, lora_alpha=16, lora_dropout=setting.dropout,
                    target_modules=["query", "value"], seed=seed)
    trainer = NerTrainer(spec, max_length=64, num_threads=1)
    if setting.freeze_lora_a:
        for name, param in trainer.model.named_parameters():
            if "lora_A" in name:
                param.requires_grad_(False)
    sites = [trainer.encode(s) for s in site_sentences]
    enc_test = trainer.encode(test)
    rows: List[dict] = [dict(round=0, loss=None, **_evaluate(trainer, enc_test))]
    losses: List[float] = []
    started = time.perf_counter()

    def report(r: int, loss: float) -> None:
        losses.append(loss)
        row = dict(round=r, loss=round(loss, 4), seconds=round(time.perf_counter() - started, 1),
                   **_evaluate(trainer, enc_test, losses))
        rows.append(row)
        print(f"  [{setting.name}] {'round' if setting.federated else 'epoch'} {r}: loss {row['loss']:.4f}, "
              f"F1 {row['f1']:.3f}, predicted {row['n_predicted']} / gold {row['n_gold']} ({row['seconds']} s)"
              + (f" -- {row['collapse']}" if row["collapse"] else ""), flush=True)

    (_federated if setting.federated else _centralized)(setting, trainer, sites, batch_size, seed, report)
    return {"setting": asdict(setting), "n_train": sum(len(s) for s in sites), "n_test": len(enc_test),
            "rounds": rows}


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write the rows here (rewritten after each setting)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="run only the settings with these names")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = [s for s in GRID if not args.only or s.name in args.only]
    data, results = {}, []
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for setting in settings:
        if setting.style not in data:
            data[setting.style] = _sites(setting.style, args.sites, args.seed)
        print(f"{setting.name}: {asdict(setting)}", flush=True)
        results.append(run_setting(setting, args.batch_size, args.seed, data[setting.style]))
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
