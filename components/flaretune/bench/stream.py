"""``flaretune bench stream``: ObjectStreamer model push vs FLARE's default tensor path, in a real POC.

A POC (server + 2 clients, each its own process tree, loopback only, HOME and workspace in a temp folder)
runs two jobs one after the other: ``model_push`` of a synthetic safetensors model, then the baseline that
sends an equal state dict as an FLModel. The peak RSS of every process of the POC (parents and job
processes) is sampled from /proc at 5 Hz. Rows: impl, size_bytes, chunk_mb, peak_rss_mb, seconds, mb_s,
sha256_ok. Target: every process <= 2 x chunk + 600 MB, flat in model size; throughput >= 50% of baseline.
"""

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

from flaretune.poc import PocNetwork, submit_and_wait

GiB, MiB = 1 << 30, 1 << 20
SITES = ("site-1", "site-2")
BASELINE_GB_PER_GIB = 5.5  # measured here: a 2 GiB model peaked at ~11 GB in one process


def add_arguments(parser) -> None:
    from flaretune.cliargs import non_negative_float, positive_float, positive_int

    parser.add_argument("--size-gb", type=positive_float, default=4.0,
                        help="model size in GiB for model_push (float ok)")
    parser.add_argument("--baseline-size-gb", type=non_negative_float, default=None,
                        help="baseline size in GiB (default: --size-gb, capped at 2 and at what fits in memory)")
    parser.add_argument("--chunk-mb", type=positive_float, default=64.0, help="chunk size in MiB, at most 1024")
    parser.add_argument("--slice-mb", type=positive_float, default=None,
                        help="largest message in MiB (default: the controller's)")
    parser.add_argument("--streams", type=positive_int, default=None,
                        help="parallel streams (default: the controller's)")
    parser.add_argument("--json", default="", help="write the rows here")
    parser.add_argument("--plot", default="", help="RSS-over-time plot (default: next to --json, .png)")
    parser.add_argument("--skip-baseline", action="store_true", help="only run model_push")
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where the POC and model files go")
    parser.add_argument("--timeout", type=positive_float, default=1800.0, help="seconds per job")
    parser.add_argument("--keep", action="store_true", help="keep the POC workspace (logs) for debugging")


def _say(msg: str) -> None:
    print(f"[bench stream] {msg}", flush=True)


# ---- RSS from /proc ---------------------------------------------------------------------------
def _children() -> Dict[int, List[int]]:
    kids: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree(root: int, kids: Dict[int, List[int]]) -> List[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _cpu_seconds(pid: int, last: float) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return last


def _role(pid: int, site: str) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
    if "python" not in cmd:
        return ""
    return f"{site}-job" if ("runner_process" in cmd or "worker_process" in cmd) else site


class RssSampler(threading.Thread):
    """Samples every python process under each site's root pid; names them ``<site>`` and ``<site>-job``."""

    def __init__(self, roots: Dict[str, int], period: float = 0.2):
        super().__init__(daemon=True)
        self.roots, self.period = roots, period
        self.series: Dict[str, List[tuple]] = {}
        self.peak: Dict[str, float] = {}
        self.cpu: Dict[str, Dict[int, float]] = {}  # role -> pid -> CPU seconds (for the printed table)
        self._halt = threading.Event()
        self.t0 = time.time()

    def run(self):
        while not self._halt.is_set():
            kids, now = _children(), time.time() - self.t0
            totals: Dict[str, float] = {}
            for site, root in self.roots.items():
                for pid in _tree(root, kids):
                    role = _role(pid, site)
                    if role:  # two job processes of one role never overlap: take the larger
                        totals[role] = max(totals.get(role, 0.0), _rss_mb(pid))
                        seen = self.cpu.setdefault(role, {})
                        now_cpu = _cpu_seconds(pid, seen.get(pid, (0.0, 0.0))[1])
                        first = 0.0 if role.endswith("-job") else now_cpu  # parents: count this phase only
                        seen[pid] = (seen.get(pid, (first, 0.0))[0], now_cpu)
            for role, mb in totals.items():
                self.series.setdefault(role, []).append((now, mb))
                self.peak[role] = max(self.peak.get(role, 0.0), mb)
            self._halt.wait(self.period)

    def stop(self):
        self._halt.set()
        self.join(timeout=5)

    def cpu_seconds(self) -> Dict[str, float]:
        return {role: sum(last - first for first, last in pids.values()) for role, pids in sorted(self.cpu.items())}


# ---- the POC ------------------------------------------------------------------------------------
# ---- jobs ----------------------------------------------------------------------------------------
def _write_job(folder: Path, name: str, server_wf: dict, client_exec: dict, task: str) -> Path:
    config = folder / "app" / "config"
    config.mkdir(parents=True, exist_ok=True)
    meta = {"name": name, "resource_spec": {}, "min_clients": len(SITES), "deploy_map": {"app": ["@ALL"]}}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    server = {"format_version": 2, "workflows": [dict(id=name, **server_wf)], "components": []}
    client = {"format_version": 2, "executors": [{"tasks": [task], "executor": client_exec}], "components": []}
    (config / "config_fed_server.json").write_text(json.dumps(server, indent=1))
    (config / "config_fed_client.json").write_text(json.dumps(client, indent=1))
    return folder


def _measure(network: PocNetwork, job: Path, timeout: float, label: str) -> tuple:
    sampler = RssSampler(network.roots())
    sampler.start()
    last = [0.0]

    def progress(elapsed):
        if elapsed - last[0] >= 10:
            last[0] = elapsed
            top = max(sampler.peak.items(), key=lambda kv: kv[1], default=("-", 0.0))
            _say(f"  {label}: {elapsed:.0f}s, highest peak so far {top[0]} {top[1]:.0f} MB")

    try:
        _, status, _ = submit_and_wait(network, job, timeout, progress=progress)
    finally:
        time.sleep(1.0)
        sampler.stop()
    _say(f"  {label}: {status}; CPU seconds " + ", ".join(f"{k} {v:.1f}" for k, v in sampler.cpu_seconds().items()))
    return status, sampler


def _row(impl: str, size: int, chunk_mb: float, sampler: RssSampler, seconds: float, ok: bool) -> dict:
    return {
        "impl": impl,
        "size_bytes": size,
        "chunk_mb": chunk_mb,
        "peak_rss_mb": {k: round(v, 1) for k, v in sorted(sampler.peak.items())},
        "seconds": round(seconds, 2),
        "mb_s": round(size / 1e6 / seconds, 1) if seconds > 0 else 0.0,
        "sha256_ok": bool(ok),
    }


def _run_stream(network: PocNetwork, work: Path, size: int, chunk_mb: float, timeout: float, tuning: dict) -> tuple:
    from flaretune.streaming.chunks import file_sha256
    from flaretune.streaming.state_dict import write_synthetic_model

    model = work / "model"
    _say(f"writing a synthetic {size / GiB:.2f} GiB safetensors model to {model}")
    write_synthetic_model(model, size, shard_mb=1024, tensor_mb=64)
    report_path = work / "stream_report.json"
    wf = {"path": "flaretune.streaming.controller.ModelPushController",
          "args": {"model_dir": str(model), "model_name": "bench_model", "chunk_mb": chunk_mb,
                   "report_path": str(report_path), **tuning}}
    ex = {"path": "flaretune.streaming.receiver.ModelPushReceiver", "args": {"dest_dir": "models"}}
    job = _write_job(work / "jobs" / "model_push", "model_push", wf, ex, "model_push")
    _say(f"model_push job: {size / GiB:.2f} GiB in {chunk_mb:g} MiB chunks to {', '.join(SITES)}")
    status, sampler = _measure(network, job, timeout, "model_push")
    report = json.loads(report_path.read_text()) if report_path.exists() else {"ok": False, "error": "no report"}
    ok = bool(report.get("ok"))
    if ok:
        _say("verifying the received copies (sha256 at each site)")
        for site in SITES:
            for name, digest in report["file_sha256"].items():
                ok = ok and file_sha256(network.prod_dir / site / "models" / "bench_model" / name) == digest
    else:
        _say(f"model_push failed ({status}): {report.get('error')}")
    for site in SITES:
        shutil.rmtree(network.prod_dir / site / "models", ignore_errors=True)
    shutil.rmtree(model, ignore_errors=True)
    total = report.get("total_bytes", size)
    return _row("object_streamer", total, chunk_mb, sampler, report.get("seconds", 0.0), ok), sampler, report


def _run_baseline(network: PocNetwork, work: Path, size: int, timeout: float) -> tuple:
    report_path = work / "baseline_report.json"
    wf = {"path": "flaretune.streaming.baseline.TensorPushBaseline",
          "args": {"size_mb": size / MiB, "tensor_mb": 64, "report_path": str(report_path)}}
    ex = {"path": "flaretune.streaming.baseline.TensorReceiverBaseline", "args": {}}
    job = _write_job(work / "jobs" / "baseline", "baseline_push", wf, ex, "baseline_push")
    _say(f"baseline job: {size / GiB:.2f} GiB state dict as an FLModel (default tensor path)")
    status, sampler = _measure(network, job, timeout, "baseline")
    report = json.loads(report_path.read_text()) if report_path.exists() else {"ok": False, "error": "no report"}
    if not report.get("ok"):
        _say(f"baseline did not complete cleanly ({status}): {report.get('error', report)}")
    return _row("flare_tensor_baseline", size, 0, sampler, report.get("seconds", 0.0), report.get("ok")), sampler


def _mem_available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / (1 << 20)
    return 0.0


def _baseline_size(args) -> float:
    want = args.baseline_size_gb if args.baseline_size_gb is not None else min(args.size_gb, 2.0)
    fits = max(0.0, (_mem_available_gb() - 4.0) / BASELINE_GB_PER_GIB)  # keep 4 GB for everything else
    if want > fits:
        _say(f"baseline {want:g} GiB would need ~{want * BASELINE_GB_PER_GIB:.0f} GB; running {fits:.2f} GiB instead")
    return min(want, fits)


# ---- output --------------------------------------------------------------------------------------
def _print_table(rows: List[dict], chunk_mb: float) -> None:
    limit = 2 * chunk_mb * MiB / 1e6 + 600
    head = f"{'impl':<22} {'GiB':>6} {'chunk':>6} {'max peak MB':>12} {'seconds':>8} {'MB/s':>7} sha256"
    print(f"\n{head}  peak RSS per process (MB)")
    for r in rows:
        peaks = r["peak_rss_mb"]
        top = max(peaks.values(), default=0.0)
        per = ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
        print(f"{r['impl']:<22} {r['size_bytes'] / GiB:>6.2f} {r['chunk_mb']:>6g} {top:>12.0f} {r['seconds']:>8.1f} "
              f"{r['mb_s']:>7.1f} {'ok' if r['sha256_ok'] else 'FAIL':<7} {per}")
    stream = [r for r in rows if r["impl"] == "object_streamer"]
    base = [r for r in rows if r["impl"] != "object_streamer"]
    for r in stream:
        top = max(r["peak_rss_mb"].values(), default=0.0)
        print(f"target: every process <= 2 x chunk + 600 = {limit:.0f} MB: max {top:.0f} MB -> "
              f"{'met' if top <= limit else 'NOT met'}")
        if base and base[0]["mb_s"] > 0:
            ratio = r["mb_s"] / base[0]["mb_s"]
            print(f"target: throughput >= 50% of baseline: {r['mb_s']:.0f} vs {base[0]['mb_s']:.0f} MB/s = "
                  f"{100 * ratio:.0f}% -> {'met' if ratio >= 0.5 else 'NOT met'}")


def _plot(path: Path, panels: List[tuple], chunk_mb: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, (title, sampler) in zip(axes[0], panels):
        for role, points in sorted(sampler.series.items()):
            ax.plot([t for t, _ in points], [mb for _, mb in points], label=role)
        ax.axhline(2 * chunk_mb * MiB / 1e6 + 600, color="grey", linestyle="--", label="2 x chunk + 600 MB")
        ax.set(title=title, xlabel="seconds", ylabel="RSS (MB)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    from flaretune.errors import ConfigError
    from flaretune.streaming.chunks import chunk_size_from_mb

    chunk_size_from_mb(args.chunk_mb, field_name="--chunk-mb")
    if args.size_gb <= 0:
        raise ConfigError(f"--size-gb must be > 0, got {args.size_gb}")
    size = int(args.size_gb * GiB)
    base_gb = 0.0 if args.skip_baseline else _baseline_size(args)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ft_bench_stream_", dir=args.workdir))
    network = PocNetwork(work, n_clients=len(SITES))
    rows, panels = [], []
    try:
        _say(f"preparing a POC (server + {len(SITES)} clients, loopback) in {work}")
        network.prepare()
        roots = network.start_each()
        _say("POC up: " + ", ".join(f"{k} pid {v}" for k, v in roots.items()))
        tuning = {k: v for k, v in (("slice_mb", args.slice_mb), ("streams", args.streams)) if v is not None}
        row, sampler, _ = _run_stream(network, work, size, args.chunk_mb, args.timeout, tuning)
        rows.append(row)
        panels.append((f"object_streamer {size / GiB:.2f} GiB, {args.chunk_mb:g} MiB chunks", sampler))
        if base_gb > 0:
            row, sampler = _run_baseline(network, work, int(base_gb * GiB), args.timeout)
            rows.append(row)
            panels.append((f"FLARE tensor baseline {base_gb:.2f} GiB", sampler))
    finally:
        network.stop()
        if args.keep:
            _say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    _print_table(rows, args.chunk_mb)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
        _say(f"rows written to {args.json}")
    plot = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else "")
    if plot and panels:
        _plot(Path(plot), panels, args.chunk_mb)
        _say(f"plot written to {plot}")
    return 0 if rows and all(r["sha256_ok"] for r in rows) else 1
