"""``flaretune bench methods``: the client methods side by side on one scenario (issue #15's README tables).

Runs ``flaretune compare JOB --method M [--layers L] [--lr X]`` once per method (each under ``OUT/<label>``), or,
with ``--reports``, reads report.json files already written, and prints one table: upload bytes per round
per client, trainable parameters, peak RSS of the largest site process, seconds per round and the federated
score, with the score relative to full fine-tuning when ``full`` is in the table. Writes the rows as JSON and a
plot (``--plot``, e.g. docs/bench/methods_clinical_ner.png).

A method is ``NAME[:LAYERS][@LR]``: ``layer_skip:top2@3e-4`` is ``--method layer_skip --layers top2 --lr 3e-4``.
"""

import argparse
import json
from pathlib import Path
from typing import List, Optional


def parse_method(text: str) -> dict:
    """``NAME[:LAYERS][@LR]`` → ``{"label", "method", "layers", "lr"}``."""
    head, _, lr = text.partition("@")
    name, _, layers = head.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"expected NAME[:LAYERS][@LR], got {text!r}")
    try:
        rate = float(lr) if lr else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the learning rate after '@' must be a number") from None
    return {"label": head.replace(":", "-"), "method": name, "layers": layers or None, "lr": rate}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_dir", nargs="?", default="jobs/clinical_ner", help="job folder (default jobs/clinical_ner)")
    parser.add_argument("--out", default="out/methods", help="one compare folder per method under here")
    parser.add_argument("--methods", default="lora,full,layer_skip:top2,ffa_lora",
                        help="comma-separated NAME[:LAYERS][@LR] (default lora,full,layer_skip:top2,ffa_lora)")
    parser.add_argument("--reports", nargs="*", help="tabulate these report.json files instead of running compares")
    parser.add_argument("--static", action="store_true",
                        help="no training: build each method's model and count its trainable parameters and the exact "
                        "upload bytes at the job's quantization (real bases too large to train here)")
    parser.add_argument("--rounds", type=int, help="federated rounds (default: the job's)")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--model", help="base model override (e.g. tiny-minilm-ner for a quick check)")
    parser.add_argument("--json", default="", help="write the rows here")
    parser.add_argument("--plot", default="", help="write the plot here (e.g. docs/bench/methods_clinical_ner.png)")


def row(report: dict, label: str) -> dict:
    fed = report["federated"]
    return {
        "label": label, "method": report.get("method", "lora"), "layers": report.get("layers"),
        "learning_rate": report.get("learning_rate"), "rounds": report["rounds"], "model": report["model"],
        "bytes_per_round_per_client": report["bytes_per_round_per_client"],
        "trainable_params": report.get("trainable_params"), "peak_rss_mb": report.get("peak_rss_mb"),
        "seconds_per_round": report.get("seconds_per_round"), "score": fed["test"], "metric": report["metric"],
        "centralized": report["centralized"]["test"], "scenario": report["scenario"],
        "full_model_bytes": report["full_model_bytes"],
    }


def with_relative(rows: List[dict]) -> List[dict]:
    """Upload and score relative to the ``full`` row (when there is one)."""
    full = next((r for r in rows if r["method"] == "full" and not r["layers"]), None)
    for r in rows:
        r["upload_vs_full"] = r["bytes_per_round_per_client"] / full["bytes_per_round_per_client"] if full else None
        r["score_vs_full"] = ((r["score"] - full["score"]) / full["score"]
                              if full and full["score"] and r["score"] is not None else None)
    return rows


def table_lines(rows: List[dict]) -> List[str]:
    def num(value, fmt, suffix=""):
        return "n/a" if value is None else format(value, fmt) + suffix

    lines = ["| method | upload bytes / round / client | trainable params | peak RSS (MiB, largest site) | "
             "s / round | federated score | upload vs full | score vs full |", "|" + "---|" * 8]
    for r in rows:
        name = r["method"] + (f" (layers {r['layers']})" if r["layers"] else "")
        name += f", lr {r['learning_rate']:g}" if r.get("learning_rate") else ""
        upload = None if r["upload_vs_full"] is None else 100 * r["upload_vs_full"]
        score = None if r["score_vs_full"] is None else 100 * r["score_vs_full"]
        lines.append(
            f"| {name} | {r['bytes_per_round_per_client']:,} | {num(r['trainable_params'], ',')} | "
            f"{num(r['peak_rss_mb'], '.0f')} | {num(r['seconds_per_round'], '.1f')} | {num(r['score'], '.4f')} | "
            f"{num(upload, '.1f', '%')} | {num(score, '+.1f', '%')} |")
    return lines


def write_plot(rows: List[dict], path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = [("score", "federated score (test)", False), ("bytes_per_round_per_client", "upload bytes / round / client", True),
              ("peak_rss_mb", "peak RSS of the largest site (MiB)", False)]
    for ax, (key, title, log) in zip(axes, panels):
        values = [r[key] or 0 for r in rows]
        ax.bar(labels, values, color=["tab:blue", "tab:gray", "tab:green", "tab:orange", "tab:purple", "tab:red"][: len(rows)])
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{rows[0]['scenario']}: client methods ({rows[0]['model']}, {rows[0]['rounds']} rounds)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def static_rows(job_dir, methods: List[dict], model: Optional[str] = None) -> List[dict]:
    """Each method's trainable parameters and upload (FOBS bytes after the job's quantization), untrained."""
    import dataclasses

    from flaretune.compare.scenarios import scenario_for
    from flaretune.jobcfg import JobFolder
    from flaretune.models.lora import PeftSpec
    from flaretune.train.methods import make_method
    from flaretune.wire import update_wire_bytes

    job = JobFolder(job_dir)
    args = {k: v for k, v in job.persistor_args.items() if k not in ("output_dir", "task")}
    spec = PeftSpec(**{**args, **({"model_name": model} if model else {})})
    rows = []
    for m in methods:
        method_spec = dataclasses.replace(spec, method=m["method"], layers=m["layers"])
        method = make_method(m["method"], method_spec)
        built = method.build()
        params = {k: v.numpy() for k, v in method.get_params(built).items()}
        rows.append({
            "label": m["label"], "method": m["method"], "layers": m["layers"], "learning_rate": None, "rounds": 0,
            "model": spec.model_name, "bytes_per_round_per_client": update_wire_bytes(params, job.quantization()),
            "trainable_params": sum(p.numel() for p in built.parameters() if p.requires_grad), "peak_rss_mb": None,
            "seconds_per_round": None, "score": None, "metric": None, "centralized": None,
            "scenario": scenario_for(job).name, "full_model_bytes": 4 * sum(p.numel() for p in built.parameters()),
        })
        del built
    return rows


def run(args) -> int:
    from flaretune.compare.run import compare

    rows = []
    if args.static:
        rows = static_rows(args.job_dir, [parse_method(t.strip()) for t in args.methods.split(",") if t.strip()],
                           args.model)
    elif args.reports:
        for file in args.reports:
            report = json.loads(Path(file).read_text())
            label = report.get("method", "lora") + (f"-{report['layers']}" if report.get("layers") else "")
            label += f"@{report['learning_rate']:g}" if report.get("learning_rate") else ""
            rows.append(row(report, label))
    else:
        for text in [m for m in args.methods.split(",") if m.strip()]:
            m = parse_method(text.strip())
            report = compare(args.job_dir, Path(args.out) / m["label"], sites=args.sites, rounds=args.rounds,
                             model=args.model, method=m["method"], layers=m["layers"], learning_rate=m["lr"])
            rows.append(row(report, m["label"]))
    rows = with_relative(rows)
    print("\n".join(table_lines(rows)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.plot:
        print(f"wrote {write_plot(rows, args.plot)}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="flaretune bench methods")
    add_arguments(parser)
    return run(parser.parse_args(argv))
