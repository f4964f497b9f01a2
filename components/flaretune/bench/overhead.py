"""``flaretune bench overhead``: how much of a federated round is FLARE and not the sites' own work.

A round's span runs from the server starting it to the server starting the next one (the last round:
to its global model being published). Each site's train result carries three wall-clock times
(:meth:`flaretune.train.flow.RoundOutcome.timing`): when the task reached its executor, and when its
evaluation → training → evaluation began and ended; the server's ``history.json`` records when the round
started and when the last result was in. On one machine (the simulator, POC on loopback) these clocks
are the same clock, so the span splits exactly into:

* ``work``: the union of the sites' evaluation and training intervals — what the target excludes;
* ``dispatch``: round start → the first site's executor has the task (the server's task filters and
  serialisation, FLARE's task poll interval, transfer, the site's task filters);
* ``site_setup``: a site holding the task but not yet evaluating (the first round builds the model);
* ``between_sites``: nothing running at any site while another site still has work to do (sites
  that the simulator runs one after another, results in flight while another site trains);
* ``result_return``: the last site's work ended → the server has every result (result filters, transfer,
  FLARE's result handling);
* ``server``: results in → the next round starts (validation, aggregation, publishing the global model,
  the history and checkpoint).

``overhead = span − work``, reported as a fraction of the span per round and over the job. The
default run is the demo's: ``jobs/clinical_ner`` with ``flaretune compare``'s data and settings, in
the simulator and in POC (``--env``), or any ``history.json`` already written (``--history``).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from flaretune.errors import FlaretuneError
from flaretune.train.flow import TASK_RECEIVED_AT, WORK_ENDED_AT, WORK_STARTED_AT

PARTS = ("work", "dispatch", "site_setup", "between_sites", "result_return", "server")
TARGET = 0.10  # the target: overhead at most 10% of a round at the demo's settings
_JOB = Path(__file__).resolve().parents[3] / "jobs" / "clinical_ner"


def union_length(intervals: Iterable[Tuple[float, float]]) -> float:
    """Total length covered by ``[start, end]`` intervals (overlaps counted once; empty ones ignored)."""
    total, end = 0.0, None
    for a, b in sorted((a, b) for a, b in intervals if b > a):
        if end is None or a > end:
            total, end = total + (b - a), b
        elif b > end:
            total, end = total + (b - end), b
    return total


def _clip(intervals, lo: float, hi: float) -> List[Tuple[float, float]]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo)]


def round_breakdown(record: dict, span_end: float) -> dict:
    """One ``history.json`` round split into :data:`PARTS` (seconds; they add up to ``span``).

    ``span_end`` is when the next round started (the last round: ``started_at + seconds``). A round
    without the timestamps (an older history, or a DP filter that dropped the training metrics) has
    no breakdown: ``{"round": r, "span": ..., "missing": why}``."""
    r, start = record["round"], record.get("started_at")
    results_at = record.get("results_at")
    sites = {name: site.get("metrics") or {} for name, site in (record.get("sites") or {}).items()}
    timed = {name: m for name, m in sites.items() if all(k in m for k in (TASK_RECEIVED_AT, WORK_STARTED_AT,
                                                                             WORK_ENDED_AT))}
    if start is None or results_at is None or not timed or len(timed) < len(sites):
        untimed = sorted(set(sites) - set(timed))
        why = ("the round has no started_at/results_at" if start is None or results_at is None else
               f"no timing metrics from {', '.join(untimed) or 'any site'}")
        return {"round": r, "span": span_end - start if start is not None else None, "missing": why}
    span = span_end - start
    work_iv = _clip([(m[WORK_STARTED_AT], m[WORK_ENDED_AT]) for m in timed.values()], start, span_end)
    setup_iv = _clip([(m[TASK_RECEIVED_AT], m[WORK_STARTED_AT]) for m in timed.values()], start, span_end)
    first = min([start + span] + [a for a, _ in setup_iv + work_iv])
    last = max([first] + [b for _, b in setup_iv + work_iv])
    results_at = min(max(results_at, last), span_end)
    work = union_length(work_iv)
    busy = union_length(work_iv + setup_iv)
    parts = {"work": work, "dispatch": first - start, "site_setup": busy - work,
             "between_sites": (last - first) - busy, "result_return": results_at - last,
             "server": span_end - results_at}
    return {"round": r, "span": span, **{k: round(v, 4) for k, v in parts.items()},
            "overhead": round(span - work, 4), "overhead_fraction": (span - work) / span if span > 0 else None,
            "sites": len(timed)}


def job_breakdown(history: dict) -> dict:
    """Every round of a ``history.json`` (:func:`round_breakdown`) and the job's totals over the timed rounds."""
    rounds = [r for r in history.get("rounds", []) if "round" in r]
    rows = []
    for i, record in enumerate(rounds):
        if i + 1 < len(rounds) and rounds[i + 1].get("started_at") is not None:
            span_end = rounds[i + 1]["started_at"]
        else:
            span_end = (record.get("started_at") or 0.0) + float(record.get("seconds", 0.0))
        rows.append(round_breakdown(record, span_end))
    timed = [row for row in rows if "missing" not in row]
    totals = {k: round(sum(row[k] for row in timed), 3) for k in PARTS + ("span", "overhead")} if timed else {}
    if totals:
        totals["overhead_fraction"] = totals["overhead"] / totals["span"] if totals["span"] > 0 else None
        later = timed[1:]  # the first round also builds each site's model: its share shown on its own too
        if later:
            span = sum(row["span"] for row in later)
            totals["overhead_fraction_after_round_1"] = sum(row["overhead"] for row in later) / span if span else None
    return {"rounds": rows, "total": totals, "timed_rounds": len(timed)}


def overhead_of(history_file) -> Optional[float]:
    """The job's overhead fraction from a ``history.json`` (``None`` when its rounds carry no timing)."""
    path = Path(history_file)
    if not path.is_file():
        return None
    return job_breakdown(json.loads(path.read_text())).get("total", {}).get("overhead_fraction")


def table_lines(name: str, breakdown: dict) -> List[str]:
    head = f"{'round':>5} {'span s':>7} " + " ".join(f"{p.replace('_', ' '):>13}" for p in PARTS) + f" {'overhead':>9}"
    lines = [f"{name}: seconds per round (work = the sites' evaluation and training)", head]
    for row in breakdown["rounds"]:
        if "missing" in row:
            lines.append(f"{row['round'] + 1:>5} {'':>7} not split: {row['missing']}")
            continue
        lines.append(f"{row['round'] + 1:>5} {row['span']:>7.1f} " + " ".join(f"{row[p]:>13.2f}" for p in PARTS)
                     + f" {row['overhead_fraction']:>9.1%}")
    total = breakdown["total"]
    if total:
        lines.append(f"{'all':>5} {total['span']:>7.1f} " + " ".join(f"{total[p]:>13.2f}" for p in PARTS)
                     + f" {total['overhead_fraction']:>9.1%}")
        if total.get("overhead_fraction_after_round_1") is not None:
            lines.append(f"  rounds 2-{breakdown['timed_rounds']}: overhead "
                         f"{total['overhead_fraction_after_round_1']:.1%} (round 1 also builds each site's model)")
        met = "met" if total["overhead_fraction"] <= TARGET else "not met"
        lines.append(f"  overhead {total['overhead_fraction']:.1%} of the job's round time: target <= {TARGET:.0%} "
                     f"{met}; the largest part besides work: {_largest(total)}")
    return lines


def _largest(total: dict) -> str:
    part = max((p for p in PARTS if p != "work"), key=lambda p: total[p])
    return f"{part.replace('_', ' ')} {total[part]:.1f}s ({total[part] / total['span']:.1%})"


def write_plot(results: Dict[str, dict], path) -> Path:
    """One stacked bar per run and round: where each round's seconds went."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    colours = ("#4c72b0", "#dd8452", "#937860", "#8c8c8c", "#c44e52", "#55a868")
    for ax, (name, breakdown) in zip(axes[0], results.items()):
        rows = [row for row in breakdown["rounds"] if "missing" not in row]
        xs = [row["round"] + 1 for row in rows]
        bottom = [0.0] * len(rows)
        for part, colour in zip(PARTS, colours):
            values = [row[part] for row in rows]
            ax.bar(xs, values, bottom=bottom, color=colour, label=part.replace("_", " "))
            bottom = [b + v for b, v in zip(bottom, values)]
        fraction = breakdown["total"].get("overhead_fraction")
        ax.set_title(f"{name}: overhead {fraction:.1%} of round time" if fraction is not None else name)
        ax.set_xlabel("round")
        ax.set_ylabel("seconds")
        ax.set_xticks(xs)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="sim,poc", help="where to run the demo's job: sim, poc or sim,poc (default)")
    parser.add_argument("--history", action="append", default=[], metavar="FILE",
                        help="split this history.json instead of running a job (repeatable)")
    parser.add_argument("--model", default=None, help="base model (default: the job's, MiniLM for the demo)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default: the job's, 10 for the demo)")
    parser.add_argument("--sites", type=int, default=3, help="sites (default 3)")
    parser.add_argument("--max-steps", type=int, default=0, help="cap local steps per round (default: the job's)")
    parser.add_argument("--json", default="", help="write the breakdowns here")
    parser.add_argument("--plot", default="", help="write a PNG of where each round's seconds went")
    parser.add_argument("--workdir", default="", help="where data, jobs and workspaces go (default: a temp folder)")


def _envs(text: str) -> List[str]:
    envs = [e.strip() for e in text.split(",") if e.strip()]
    bad = [e for e in envs if e not in ("sim", "poc")]
    if bad or not envs:
        raise FlaretuneError(f"--env: expected sim, poc or sim,poc, got {text!r}")
    return envs


def _demo_job(root: Path, args) -> Tuple[Path, dict]:
    """The job folder ``flaretune compare jobs/clinical_ner`` runs, with its data under ``root``."""
    from flaretune.compare.run import Options, start, write_federated_job

    options = Options(sites=args.sites, rounds=args.rounds, model=args.model)
    run = start(_JOB, root, options, step_count=2)
    written = write_federated_job(run, root, executor_args={"max_steps": args.max_steps} if args.max_steps else None)
    settings = {"model": run.spec.model_name, "rounds": run.rounds, "sites": args.sites,
                "quantization": written.quantization, "max_steps": args.max_steps or run.hp["max_steps"],
                "epochs_per_round": run.hp["epochs_per_round"]}
    return written.path, settings


def _run_sim(job: Path, root: Path, sites: int) -> Tuple[dict, float]:
    from flaretune.simulate import run_simulator

    started = time.time()
    run_dir = run_simulator(job, root / "sim-workspace", sites, log_file=root / "sim.log", echo=lambda line: None)
    return json.loads((run_dir / "global_model" / "history.json").read_text()), time.time() - started


def _run_poc(job: Path, root: Path, sites: int) -> Tuple[dict, float]:
    from flaretune.poc import PocNetwork, submit_and_wait

    network = PocNetwork(root / "poc", n_clients=sites)
    try:
        network.prepare()
        network.start()
        started = time.time()
        _, status, result = submit_and_wait(network, job, timeout=3600)
        seconds = time.time() - started
    finally:
        network.stop()
    if status != "FINISHED:COMPLETED" or result is None:
        raise FlaretuneError(f"POC run of {job} ended {status} (logs under {root / 'poc'})")
    hits = sorted(Path(result).glob("**/global_model/history.json"))
    if not hits:
        raise FlaretuneError(f"no global_model/history.json in the POC result {result}")
    return json.loads(hits[0].read_text()), seconds


def run(args) -> int:
    results: Dict[str, dict] = {}
    summary: dict = {"target_fraction": TARGET, "runs": {}}
    for path in args.history:
        file = Path(path)
        if not file.is_file():
            raise FlaretuneError(f"--history: {file} is not a file")
        try:
            history = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise FlaretuneError(f"--history: {file}: not JSON ({err.msg} at line {err.lineno})") from None
        results[str(file)] = job_breakdown(history)
    if not args.history:
        root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-overhead-")).resolve()
        envs = _envs(args.env)
        job, settings = _demo_job(root, args)
        summary["settings"] = settings
        for env in envs:
            print(f"overhead: running {job} in {'the simulator' if env == 'sim' else 'POC'} "
                  f"({settings['rounds']} rounds, {settings['sites']} sites, {settings['model']})", flush=True)
            history, wall = (_run_sim if env == "sim" else _run_poc)(job, root, args.sites)
            results[env] = job_breakdown(history)
            summary["runs"][env] = {"wall_s": round(wall, 1)}
    for name, breakdown in results.items():
        for line in table_lines(name, breakdown):
            print(line)
        summary["runs"].setdefault(name, {}).update(breakdown)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if args.plot and any(b["total"] for b in results.values()):
        print(f"plot: {write_plot(results, args.plot)}")
    return 0
