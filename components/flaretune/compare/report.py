"""The comparison's picture and console summary."""

from pathlib import Path

def metric_title(report: dict) -> str:
    """The scenario's name for its headline metric (the registry's ``metric_title``)."""
    from flaretune.compare.scenarios import SCENARIOS

    scenario = SCENARIOS.get(report["scenario"])
    return scenario.metric_title if scenario else report["metric"]


def _row(name: str, setting: dict, with_f1: bool) -> str:
    line = f"{name:<22}{setting['test']:>15.4f}"
    return line + (f"{setting['macro_f1']:>10.4f}" if with_f1 and setting.get("macro_f1") is not None else "")


def summary_lines(report: dict) -> list:
    fed, central, local = report["federated"]["test"], report["centralized"]["test"], report["local_only"]["mean"]
    share = 100.0 * report["bytes_per_round_per_client"] / report["full_model_bytes"]
    with_f1 = "macro_f1" in report["federated"]
    lines = [f"{'setting':<22}{metric_title(report):>15}" + (f"{'macro-F1':>10}" if with_f1 else "")]
    lines.append(_row("federated", report["federated"], with_f1))
    lines.append(_row("centralized", report["centralized"], with_f1))
    lines.append(_row("local-only (mean)", {"test": local, "macro_f1": report["local_only"].get("macro_f1_mean")},
                      with_f1))
    lines += [_row("  local-only " + name, report["local_only"]["sites"][name], with_f1)
              for name in report["local_only"]["per_site"]]
    if report.get("zero_shot"):
        lines.append(_row("zero-shot (base)", report["zero_shot"], with_f1))
    lines += [
        f"federated / centralized = {fed / central if central else float('nan'):.3f}; "
        f"federated - local-only mean = {100 * (fed - local):+.1f} points"
        + (f"; federated - zero-shot = {100 * (fed - report['zero_shot']['test']):+.1f} points"
           if report.get("zero_shot") else ""),
        f"upload per round per client: {report['bytes_per_round_per_client']:,} bytes "
        f"({share:.2f}% of the {report['full_model_bytes']:,}-byte fp32 model; "
        + (f"masked {report['secure_aggregation']['modulus_bits']}-bit fixed point up, quantization "
           f"{report['quantization']} down)" if report.get("secure_aggregation") else
           f"quantization {report['quantization']})"),
        f"wall time {report['wall_s']:.0f}s"
        + (f"; FLARE overhead {report['flare_overhead']:.1%} of the federated rounds' time (not the sites' "
           f"training and evaluation; flaretune bench overhead splits it)"
           if report.get("flare_overhead") is not None else ""),
    ]
    if report.get("method"):
        rss, per_round = report.get("peak_rss_mb"), report.get("seconds_per_round")
        lines.insert(-1, f"method {report['method']}" + (f" (layers {report['layers']})" if report.get("layers") else "")
                     + f": {report['trainable_params']:,} trainable parameters, peak RSS of the largest site "
                     + (f"{rss:.0f} MiB" if rss is not None else "n/a") + ", "
                     + (f"{per_round:.1f} s per round" if per_round is not None else "n/a s per round"))
    lines += [f"WARNING {line}" for line in report.get("collapse", [])]
    return lines


def write_plot(report: dict, path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = list(range(1, len(report["federated"]["per_round"]) + 1))
    fig, (ax_f1, ax_bytes) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_f1.plot(rounds, report["federated"]["per_round"], marker="o", label="federated (global model)")
    ax_f1.axhline(report["centralized"]["test"], color="tab:green", linestyle="--", label="centralized")
    ax_f1.axhline(report["local_only"]["mean"], color="tab:red", linestyle=":", label="local-only (mean)")
    if report.get("zero_shot"):
        ax_f1.axhline(report["zero_shot"]["test"], color="tab:gray", linestyle="-.", label="zero-shot (base model)")
    ax_f1.set_xlabel("round")
    ax_f1.set_ylabel(metric_title(report) + (" (strict)" if report["metric"] == "entity_f1" else ""))
    ax_f1.set_ylim(0, 1)
    ax_f1.set_xticks(rounds)
    ax_f1.set_title(f"{report['scenario']}: {report['model']}, {report.get('sites', '?')} sites")
    ax_f1.legend(loc="lower right")
    per_round = [report["bytes_per_round_per_client"]] * len(rounds)
    ax_bytes.bar(rounds, per_round, color="tab:blue", label="upload per client (adapter" + (" + head)" if report["metric"] == "entity_f1" else ")"))
    ax_bytes.axhline(report["full_model_bytes"], color="tab:gray", linestyle="--", label="full fp32 model")
    ax_bytes.set_yscale("log")
    ax_bytes.set_ylim(bottom=min(per_round) / 10)
    ax_bytes.set_xlabel("round")
    ax_bytes.set_ylabel("bytes per round per client")
    ax_bytes.set_xticks(rounds)
    ax_bytes.set_title(f"bytes on the wire (quantization: {report['quantization']})")
    ax_bytes.legend(loc="center right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
