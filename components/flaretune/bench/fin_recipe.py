"""Which bank recipe learns the realistic messages: centralized and in-process federated LoRA runs.

    .venv/bin/python -m flaretune.bench.fin_recipe [--federated] [--rounds R] [--steps S] [--lr LR] ...

Trains SmolLM2-135M-Instruct + LoRA (the job's PeftSpec unless ``--modules`` says otherwise) on the
SYNTHETIC bank messages of data seed 1 — tuning data: ``flaretune compare`` reports on seed 0, which this
never reads — and prints, after every round (centralized: every ``--steps`` steps, a fresh optimizer each
time as a FLARE round has), the mean training loss, accuracy and macro-F1 on the banks' 180 validation
messages, and how many answers each label got (a collapse shows as one label taking nearly all).

* Centralized: the three banks' training messages pooled; ``rounds x steps`` steps in all.
* ``--federated``: each round every bank starts from the global adapter, trains ``--steps`` steps, and the
  adapters are averaged weighted by example count by the job's FedAvg strategy (without FLARE or
  quantization).
"""

import argparse
import json
import time
from pathlib import Path

_MODULES = "q_proj,v_proj"


def _arguments(argv=None):
    parser = argparse.ArgumentParser(prog="python -m flaretune.bench.fin_recipe", description=__doc__.splitlines()[0])
    parser.add_argument("--federated", action="store_true", help="FedAvg over the 3 banks (default: pooled)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (centralized: optimizer restarts), default 5")
    parser.add_argument("--steps", type=int, default=8, help="steps per round and site (centralized: x3), default 8")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default 2e-3)")
    parser.add_argument("--warmup", type=float, default=0.0, help="warm-up share of all steps (default 0)")
    parser.add_argument("--schedule", default="constant", choices=("constant", "linear"))
    parser.add_argument("--modules", default=_MODULES, help=f"LoRA target modules (default {_MODULES})")
    parser.add_argument("--tau", type=float, default=0.0, help="logit adjustment tau (default 0: off)")
    parser.add_argument("--eval-every", type=int, default=1, help="score every this many rounds (default 1)")
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default) or tiny-smollm2")
    parser.add_argument("--json", default="", help="append the result as one JSON line to this file")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    import torch

    from flaretune.aggregation.strategy import make_strategy
    from flaretune.aggregation.validation import aggregate_round
    from flaretune.data.finance import make_bank
    from flaretune.models.lora import PeftSpec
    from flaretune.train import loop
    from flaretune.train.causal import InstructTrainer

    args = _arguments(argv)
    torch.set_num_threads(1)
    spec = PeftSpec(model_name=args.model, labels=None, lora_r=8, lora_alpha=16, lora_dropout=0.05,
                    target_modules=args.modules.split(","), seed=0)
    trainer = InstructTrainer(spec, max_length=96, num_threads=1, system_prompt="You are a financial analyst.",
                              logit_adjustment=args.tau)
    sites, validation = [], []
    for index in range(3):
        train, test = make_bank(index, 3, 1, 0.5, n_test=60, style="messages")
        sites.append(trainer.encode(train))
        validation += trainer.encode(test)
    if not args.federated:
        sites = [[record for site in sites for record in site]]
    name = ("federated" if args.federated else "centralized") + f" {args.rounds}x{args.steps} lr {args.lr:g}"
    print(f"{name}: {[len(s) for s in sites]} training, {len(validation)} validation messages", flush=True)
    steps = args.steps * (1 if args.federated else 3)
    strategy = make_strategy("fedavg")  # the job's own strategy and result checks, as the NER recipe bench
    global_params = {k: v.numpy() for k, v in trainer.get_params().items()}
    names = [f"site-{index + 1}" for index in range(len(sites))]
    rows = []
    for round_index in range(args.rounds):
        started, results, losses = time.time(), {}, []
        for site_index, (site, records) in enumerate(zip(names, sites)):
            trainer.set_params(global_params)
            step = loop.BackpropStep(learning_rate=args.lr, warmup_ratio=args.warmup, schedule=args.schedule,
                                     round_index=round_index, num_rounds=args.rounds)
            result = trainer.fit(records, epochs=100, batch_size=8, seed=round_index * 10 + site_index,
                                 max_steps=steps, step=step)
            results[site] = ({k: v.numpy() for k, v in trainer.get_params().items()}, len(records))
            losses.append(result.mean_loss)
        train_s = time.time() - started
        global_params, _, rejected = aggregate_round(strategy, global_params, results)
        if rejected:
            raise RuntimeError(f"round {round_index + 1}: results rejected: {rejected}")
        if (round_index + 1) % args.eval_every and round_index + 1 < args.rounds:
            continue
        trainer.set_params(global_params)
        scores = trainer.evaluate(validation)
        row = {"round": round_index + 1, "losses": [round(loss, 4) for loss in losses],
               "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
               "answers": {label: v["predicted"] for label, v in scores["per_label"].items()},
               "train_s": round(train_s, 1)}
        rows.append(row)
        print(f"  round {row['round']}/{args.rounds}: loss {row['losses']}, accuracy {row['accuracy']:.3f}, "
              f"macro-F1 {row['macro_f1']:.3f}, answers {row['answers']} ({row['train_s']:.0f} s training)", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "a") as out:
            out.write(json.dumps({"setting": name, "args": vars(args), "rounds": rows}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
