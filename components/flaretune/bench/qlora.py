"""``flaretune bench qlora``: LoRA on the float32 base vs QLoRA (NF4 + double quantization, arXiv:2305.14314).

Per scenario (clinical NER on MiniLM, bank sentiment on SmolLM2-135M), the same FedAvg run of each method
in its own fresh process (:mod:`flaretune.bench.site_run`): peak RSS (whole process, and while training
after the model was built), seconds per round, the score after the last round, and how many bytes the
base's linear weights take (packed 4-bit vs float32). On the CPU the 4-bit layers are bitsandbytes' CPU
backend; ``flaretune bench gpu`` measures the CUDA path.
"""

import argparse
import json
from pathlib import Path

_DEFAULT_MODELS = {"ner": "minilm-ner", "fin": "smollm2-135m"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenarios", default="ner,fin", help="comma list of ner, fin (default both)")
    parser.add_argument("--ner-model", default=_DEFAULT_MODELS["ner"])
    parser.add_argument("--fin-model", default=_DEFAULT_MODELS["fin"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="local steps per round and site")
    parser.add_argument("--n-train", type=int, default=48, help="training records per site (3 sites)")
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--lr", type=float, default=5e-3, help="AdamW rate (both methods)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="", help="write the runs and the summary here")


def summarize(runs) -> list:
    rows = []
    for run in runs:
        row = {"scenario": run["scenario"], "model": run["model"], "method": run["method"],
               "trainable_params": run["trainable_params"], "upload_bytes_per_round": run["upload_bytes_per_round"],
               "peak_rss_mb": round(run["peak_rss_mb"], 1),
               "rss_after_build_mb": round(run["rss_after_build_mb"], 1),
               "train_peak_rss_mb": run["train_peak_rss_mb"] and round(run["train_peak_rss_mb"], 1),
               "seconds_per_round": round(run["seconds_per_round"], 2), "score_key": run["score_key"],
               "score": run["rounds"][-1]["score"], "initial_score": run["initial_score"]}
        if "base_storage" in run:
            row["base_linear_bytes"] = run["base_storage"]["packed_weight_bytes"]
            row["base_linear_fp32_bytes"] = run["base_storage"]["float32_weight_bytes"]
        rows.append(row)
    return rows


def format_table(rows) -> str:
    lines = [f"{'scenario':<9}{'model':<15}{'method':<8}{'trainable':>10}{'peak RSS MB':>13}{'built RSS MB':>14}"
             f"{'train RSS MB':>14}"
             f"{'s/round':>9}{'score':>8}{'base linear MB':>16}"]
    for r in rows:
        base = f"{r['base_linear_bytes'] / 2**20:.1f}/{r['base_linear_fp32_bytes'] / 2**20:.1f}" \
            if "base_linear_bytes" in r else "fp32"
        lines.append(f"{r['scenario']:<9}{r['model']:<15}{r['method']:<8}{r['trainable_params']:>10}"
                     f"{r['peak_rss_mb']:>13.1f}{r['rss_after_build_mb']:>14.1f}"
                     f"{(r['train_peak_rss_mb'] or float('nan')):>14.1f}"
                     f"{r['seconds_per_round']:>9.2f}{r['score']:>8.3f}{base:>16}")
    lines.append("score: entity F1 (ner) or accuracy (fin) after the last round; base linear MB: 4-bit packed / float32")
    return "\n".join(lines)


def run(args) -> int:
    from flaretune.bench.site_run import spawn

    models = {"ner": args.ner_model, "fin": args.fin_model}
    runs = []
    for scenario in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
        if scenario not in models:
            raise SystemExit(f"--scenarios: unknown scenario {scenario!r}; valid: ner, fin")
        for method in ("lora", "qlora"):
            runs.append(spawn(["--method", method, "--scenario", scenario, "--model", models[scenario],
                               "--rounds", args.rounds, "--steps", args.steps, "--n-train", args.n_train,
                               "--n-test", args.n_test, "--lr", args.lr, "--threads", args.threads]))
    rows = summarize(runs)
    print(format_table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": rows, "runs": runs}, indent=2) + "\n")
    return 0
