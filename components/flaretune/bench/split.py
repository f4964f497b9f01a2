"""Split learning (jobs/split_ner) beside federated LoRA (jobs/clinical_ner) on the same data: score, and per
site and step the bytes, the seconds and the peak memory; a table and docs/bench/split.png.

    python -m flaretune.bench.split --out out/split_bench [--model tiny-minilm-ner] [--rounds 2] [--sites 3]

Both federated runs are FLARE simulator runs of the checked-in job folders through ``flaretune compare``
(:mod:`flaretune.compare.split`), so the figures are the ones its report.json holds.
"""

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
ROWS = (("test", "test entity F1", "{:.4f}"), ("bytes_per_step", "bytes per step (site, both ways)", "{:,.0f}"),
        ("seconds_per_step", "seconds per step (site)", "{:.3f}"), ("peak_rss_mb", "peak RSS of a site, MiB", "{:.0f}"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="the comparison's folder (report.json, logs, workspaces)")
    parser.add_argument("--model", default="minilm-ner", help="minilm-ner (default) or tiny-minilm-ner")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--json", default="", help="also write the table here (e.g. docs/bench/split.json)")
    parser.add_argument("--png", default="", help="write the plot here (e.g. docs/bench/split.png)")


def table_lines(report: dict) -> list:
    split, lora = report["split"], report["federated_lora"]
    lines = [f"{'':<34}{'split (FL-GLM)':>16}{'federated LoRA':>16}"]
    for key, title, fmt in ROWS:
        lines.append(f"{title:<34}{fmt.format(split[key]):>16}{fmt.format(lora[key]):>16}")
    lines.append(f"{'centralized LoRA F1 (same budget)':<34}{report['centralized']['test']:>16.4f}")
    return lines


def write_plot(report: dict, path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split, lora = report["split"], report["federated_lora"]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    rounds = list(range(1, len(split["per_round"]) + 1))
    axes[0].plot(rounds, split["per_round"], "o-", color="tab:orange", label="split")
    axes[0].plot(rounds, lora["per_round"], "s-", color="tab:blue", label="federated LoRA")
    axes[0].axhline(report["centralized"]["test"], color="gray", ls="--", label="centralized LoRA")
    axes[0].set(title="test entity F1 per round", xlabel="round", ylim=(0, 1), xticks=rounds)
    axes[0].legend(fontsize=7)
    for ax, (key, title, _) in zip(axes[1:], ROWS[1:]):
        values = [split[key], lora[key]]
        ax.bar(["split", "fed. LoRA"], values, color=["tab:orange", "tab:blue"])
        ax.set_title(title, fontsize=9)
        if key == "bytes_per_step":
            ax.set_yscale("log")
    fig.suptitle(f"split_ner vs clinical_ner, {report['model']}, {report['sites']} sites, {report['rounds']} rounds "
                 "(FLARE simulator)", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def replot(report_json, png) -> Path:
    """The plot again from a comparison's report.json."""
    return write_plot(json.loads(Path(report_json).read_text()), png)


def run(args) -> int:
    from flaretune.compare.run import compare

    report = compare(REPO / "jobs" / "split_ner", args.out, sites=args.sites, rounds=args.rounds, model=args.model)
    print("\n".join(table_lines(report)))
    keep = {k: report[k] for k in ("split", "federated_lora", "model", "sites", "rounds", "wall_s")}
    keep["centralized"] = report["centralized"]["test"]
    if args.json:
        Path(args.json).write_text(json.dumps(keep, indent=2) + "\n")
    if args.png:
        print(f"wrote {write_plot(report, args.png)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flaretune.bench.split", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
