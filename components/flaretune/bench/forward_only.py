"""``flaretune bench forward-only``: backprop LoRA vs forward-only LoRA (FwdLLM, arXiv:2308.13894).

Same model, same SYNTHETIC hospitals (or banks), same FedAvg, one fresh process per method
(:mod:`flaretune.bench.site_run`) so one's peak memory does not pollute the other's. Backprop LoRA runs
``--rounds`` rounds; forward-only runs at least as many and goes on while its training time is below
backprop's total, so the table gives its score after the same number of rounds and after the same wall
time (the last round that ended within backprop's time). Upload: backprop sends the LoRA adapter (and
head) in float32; forward-only in shared-seed mode sends K float32 projections per step, whose replay
by the server is checked bit for bit on one site each round (``replay_exact``).
"""

import argparse
import json
from pathlib import Path
from typing import Optional


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="ner", choices=("ner", "fin"))
    parser.add_argument("--model", default="", help="base (default: minilm-ner; fin: smollm2-135m); tiny-* for a dry run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="local steps per round and site")
    parser.add_argument("--n-train", type=int, default=48, help="training records per site (3 sites)")
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--lr", type=float, default=5e-3, help="AdamW rate of backprop LoRA")
    parser.add_argument("--zo-lr", type=float, default=1e-3, help="SGD rate of forward-only")
    parser.add_argument("--perturbations", type=int, default=4, help="K per step")
    parser.add_argument("--candidates", type=int, default=1, help="FwdLLM selection candidates (1: off)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="", help="write both runs and the summary here")


def _common(args):
    return ["--scenario", args.scenario, "--model", args.model, "--rounds", args.rounds, "--steps", args.steps,
            "--n-train", args.n_train, "--n-test", args.n_test, "--threads", args.threads]


def score_within(run: dict, seconds: float) -> Optional[float]:
    """The score after the last round that ended within ``seconds`` of training (the initial one if none)."""
    score = run["initial_score"]
    for row in run["rounds"]:
        if row["cumulative_seconds"] <= seconds * 1.0001:
            score = row["score"]
    return score


def summarize(backprop: dict, forward: dict, rounds: int) -> dict:
    budget = backprop["rounds"][-1]["cumulative_seconds"]
    rows = {}
    for name, run in (("lora", backprop), ("forward_only", forward)):
        rows[name] = {
            "method": name, "trainable_params": run["trainable_params"],
            "upload_bytes_per_round": run["upload_bytes_per_round"], "peak_rss_mb": round(run["peak_rss_mb"], 1),
            "train_peak_rss_mb": run["train_peak_rss_mb"] and round(run["train_peak_rss_mb"], 1),
            "seconds_per_round": round(run["seconds_per_round"], 2),
            "score_after_rounds": run["rounds"][min(rounds, len(run["rounds"])) - 1]["score"],
            "score_after_same_time": score_within(run, budget), "rounds_run": len(run["rounds"]),
        }
    rows["forward_only"]["replay_exact"] = forward.get("replay_exact")
    return {"score_key": backprop["score_key"], "initial_score": backprop["initial_score"], "rounds": rounds,
            "time_budget_s": round(budget, 2), "methods": rows,
            "upload_ratio": forward["upload_bytes_per_round"] / backprop["upload_bytes_per_round"],
            "peak_rss_ratio": backprop["peak_rss_mb"] / forward["peak_rss_mb"]}


def format_table(summary: dict) -> str:
    key = summary["score_key"]
    after_rounds, after_time = f"{key}@{summary['rounds']}r", f"{key}@time"
    head = (f"{'method':<14}{'trainable':>10}{'upload B/rnd':>14}{'peak RSS MB':>13}{'train RSS MB':>14}"
            f"{'s/round':>9}{after_rounds:>10}{after_time:>10}{'rounds':>8}")
    lines = [head]
    for row in summary["methods"].values():
        lines.append(f"{row['method']:<14}{row['trainable_params']:>10}{row['upload_bytes_per_round']:>14.0f}"
                     f"{row['peak_rss_mb']:>13.1f}{(row['train_peak_rss_mb'] or float('nan')):>14.1f}"
                     f"{row['seconds_per_round']:>9.2f}{row['score_after_rounds']:>10.3f}"
                     f"{row['score_after_same_time']:>10.3f}{row['rounds_run']:>8}")
    lines.append(f"initial {key} {summary['initial_score']:.3f}; same wall time = {summary['time_budget_s']:.1f} s of "
                 f"one site's training; forward-only upload {summary['upload_ratio']:.5f}x LoRA's, "
                 f"shared-seed replay exact: {summary['methods']['forward_only']['replay_exact']}")
    return "\n".join(lines)


def write_plot(runs, summary: dict, path) -> None:
    """Score against one site's cumulative training seconds, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for run in runs:
        xs = [0.0] + [row["cumulative_seconds"] for row in run["rounds"]]
        ys = [run["initial_score"]] + [row["score"] for row in run["rounds"]]
        ax.plot(xs, ys, marker="o", label=f"{run['method']} ({run['peak_rss_mb']:.0f} MB peak RSS)")
    ax.axvline(summary["time_budget_s"], color="grey", linestyle=":", label="backprop's time")
    ax.set_xlabel("one site's training time (s)")
    ax.set_ylabel(summary["score_key"])
    ax.set_title(f"backprop LoRA vs forward-only ({runs[0]['model']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args) -> int:
    from flaretune.bench.site_run import spawn

    backprop = spawn(["--method", "lora", "--lr", args.lr, *_common(args)])
    budget = backprop["rounds"][-1]["cumulative_seconds"]
    forward = spawn(["--method", "forward_only", "--zo-lr", args.zo_lr, "--perturbations", args.perturbations,
                     "--candidates", args.candidates, "--time-budget", budget, *_common(args)])
    summary = summarize(backprop, forward, args.rounds)
    print(format_table(summary))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": [backprop, forward]}, indent=2) + "\n")
        write_plot([backprop, forward], summary, Path(args.json).with_suffix(".png"))
    return 0
