"""Why the shipped clinical NER recipe collapses: centralized LoRA runs over a small recipe grid.

    .venv/bin/python -m flaretune.bench.ner_recipe --json out/recipe.json

Trains MiniLM-L6 + LoRA (r 8, alpha 16, query/value + head, the job's PeftSpec) on the pooled
SYNTHETIC sites, and prints per epoch the mean training loss, test entity F1 and the number of
predicted vs gold test entities, for each setting: learning rate, warm-up + linear decay or constant,
an optimizer restart every ``restart_every`` epochs (what FLARE rounds do: AdamW is re-created each
round, and with a schedule its warm-up restarts too), LoRA dropout, and data style. Epoch 0 is the
freshly initialised model. The loop here is deliberately small and separate from ``train.loop`` so
schedules can be tried without changing it.
"""

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional


@dataclass
class Setting:
    name: str
    lr: float
    warmup: float = 0.0  # fraction of the steps of one optimizer lifetime
    schedule: str = "constant"  # or "linear" (decay to 0 at the end of each optimizer lifetime)
    restart_every: int = 0  # epochs between optimizer re-creations; 0 = never
    dropout: float = 0.1
    style: str = "notes"


GRID = [  # most telling first, so a cut-short run still answers the question
    Setting("shipped 5e-3 const", 5e-3),
    Setting("2e-3 warm10+lin", 2e-3, 0.1, "linear"),
    Setting("5e-3 const restart/2ep", 5e-3, restart_every=2),
    Setting("templates 5e-3 const", 5e-3, style="templates"),
    Setting("templates 2e-3 warm10+lin", 2e-3, 0.1, "linear", style="templates"),
    Setting("1e-3 const", 1e-3),
    Setting("5e-3 warm10+lin", 5e-3, 0.1, "linear"),
    Setting("2e-3 warm10+lin restart/2ep", 2e-3, 0.1, "linear", restart_every=2),
    Setting("2e-3 const", 2e-3),
    Setting("1e-3 warm10+lin", 1e-3, 0.1, "linear"),
    Setting("2e-3 warm10+lin dropout0", 2e-3, 0.1, "linear", dropout=0.0),
]


def _factor(schedule: str, warmup_steps: int, total: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "linear":
            return max(0.0, (total - step) / max(1, total - warmup_steps))
        return 1.0

    return factor


def _pooled(style: str, n_sites: int, seed: int):
    from flaretune.data.clinical import labels_for_style, make_hospital

    train, test = [], []
    for site in range(n_sites):
        site_train, site_test = make_hospital(site, n_sites, seed=seed, style=style)
        train += site_train
        test += site_test
    return train, test, labels_for_style(style)


def run_setting(setting: Setting, epochs: int, batch_size: int, seed: int, data) -> dict:
    import torch

    from flaretune.models.lora import PeftSpec
    from flaretune.train import ner
    from flaretune.train.ner_trainer import NerTrainer

    train, test, labels = data
    spec = PeftSpec(model_name="minilm-ner", labels=labels, lora_r=8, lora_alpha=16, lora_dropout=setting.dropout,
                    target_modules=["query", "value"], seed=seed)
    trainer = NerTrainer(spec, max_length=64, num_threads=1)
    enc_train, enc_test = trainer.encode(train), trainer.encode(test)
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = -(-len(enc_train) // batch_size)
    lifetime = (setting.restart_every or epochs) * steps_per_epoch

    def fresh_optimizer():
        optimizer = torch.optim.AdamW(params, lr=setting.lr, weight_decay=0.0)
        warmup = round(setting.warmup * lifetime)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _factor(setting.schedule, warmup, lifetime))

    torch.manual_seed(seed)
    rows: List[dict] = [dict(epoch=0, loss=None, **ner_eval(trainer, enc_test, ner))]
    print(f"  [{setting.name}] epoch 0: F1 {rows[0]['f1']:.3f}, predicted {rows[0]['n_predicted']} "
          f"/ gold {rows[0]['n_gold']} entities", flush=True)
    optimizer, scheduler = fresh_optimizer()
    epoch_losses: List[float] = []
    for epoch in range(1, epochs + 1):
        if setting.restart_every and epoch > 1 and (epoch - 1) % setting.restart_every == 0:
            optimizer, scheduler = fresh_optimizer()
        model.train()
        total, n = 0.0, 0
        started = time.perf_counter()
        for ids, mask, tags in ner.batches(enc_train, batch_size, trainer.pad_id, shuffle=True, seed=seed + epoch):
            loss = model(input_ids=ids, attention_mask=mask, labels=tags).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, n = total + float(loss.detach()), n + 1
        epoch_losses.append(total / n)
        row = dict(epoch=epoch, loss=round(total / n, 4), seconds=round(time.perf_counter() - started, 1),
                   **ner_eval(trainer, enc_test, ner, epoch_losses))
        rows.append(row)
        print(f"  [{setting.name}] epoch {epoch}: loss {row['loss']:.4f}, F1 {row['f1']:.3f}, predicted "
              f"{row['n_predicted']} / gold {row['n_gold']} ({row['seconds']} s)"
              + (f" -- {row['collapse']}" if row["collapse"] else ""), flush=True)
    return {"setting": asdict(setting), "n_train": len(enc_train), "n_test": len(enc_test), "epochs": rows}


def ner_eval(trainer, encoded, ner, losses: Optional[List[float]] = None) -> Dict[str, object]:
    """Test scores, plus what share of test words the model tags ``O`` (1.0 = collapsed)."""
    gold = [e.word_tags for e in encoded]
    predicted = ner.predict(trainer.model, encoded, trainer.id2label, trainer.pad_id)
    scores = ner.entity_scores(gold, predicted, losses)
    words = sum(len(p) for p in predicted)
    share_o = sum(t == "O" for p in predicted for t in p) / max(1, words)
    return {"f1": round(scores["f1"], 4), "n_predicted": scores["n_predicted"], "n_gold": scores["n_gold"],
            "share_O": round(share_o, 3), "per_type_f1": {k: round(v["f1"], 3) for k, v in scores["per_type"].items()},
            "collapse": scores["collapse"]}


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write the rows here (rewritten after each setting)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="run only the settings with these names")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = [s for s in GRID if not args.only or s.name in args.only]
    data = {}
    results = []
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for setting in settings:
        if setting.style not in data:
            data[setting.style] = _pooled(setting.style, args.sites, args.seed)
        print(f"{setting.name}: {asdict(setting)}", flush=True)
        results.append(run_setting(setting, args.epochs, args.batch_size, args.seed, data[setting.style]))
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
