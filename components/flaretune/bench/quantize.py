"""``flaretune bench quantize``: our quantization filters vs NVFlare's ModelQuantizer vs a tensor copy.

One process, one realistic fp32 state dict, side by side. For every row the filter runs on a
WEIGHTS DXO exactly as in FLARE; ``wire_bytes`` is ``len(fobs.dumps(shareable))`` of its output,
the dequantizer runs on what ``fobs.loads`` gives back, and ``max_rel_err`` is the max over tensors
of ``max|x - x_hat| / max|x|``. Throughputs are fp32 MB (1e6 bytes) of the whole dict per second,
best of ``--repeat`` interleaved runs (a row whose round trip took over 20 s runs once). ``copy``
clones every tensor, once in place of quantizing and once in place of dequantizing: the physical
reference for memory bandwidth here. ``roundtrip_vs_copy`` compares round trips, MB / (t_quantize
+ t_dequantize) over MB / (t_copy + t_copy). On a shared
machine the figures swing with other processes' load (printed at start and end); ``--threads 1``
is steadier there.

NVFlare rows: its ``ModelQuantizer`` calls ``.cuda()`` for blockwise8/float4/normfloat4, so on a
machine without CUDA those rows are reported as failed (with the reason), and repeated as
``nvflare-cpu-patched`` with ``torch.Tensor.cuda`` replaced by a no-op for the duration of the
call (bitsandbytes has CPU kernels). NVFlare has no bfloat16 type; ``adaquant`` has no
counterpart of ours but runs on CPU, so it is measured too.

``--adapter`` measures the jobs' LoRA adapter messages instead (:mod:`flaretune.bench.quantize_adapter`).
"""

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

_OUR_TYPES = ("float16", "bfloat16", "blockwise8", "nf4", "fp4", "entropy")
_NVFLARE_TYPES = {"float16": "float16", "bfloat16": "bfloat16", "blockwise8": "blockwise8",
                  "normfloat4": "nf4", "float4": "fp4", "adaquant": "adaquant"}
_CUDA_ONLY = ("blockwise8", "normfloat4", "float4")
_SLOW_S = 20.0  # seconds; NVFlare's adaquant and bitsandbytes 4-bit on CPU take this long at 100M


def parse_params(text: str) -> int:
    m = re.fullmatch(r"\s*(\d*\.?\d+(?:e[+-]?\d+)?)\s*([kmb]?)\s*", str(text).lower())
    if not m:
        raise argparse.ArgumentTypeError(f"expected a count such as 100M, 1.5M or 2e6, got {text!r}")
    n = int(float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}[m.group(2)])
    if n < 10_000:
        raise argparse.ArgumentTypeError(f"at least 10k parameters, got {text!r}")
    return n


def _parse_types(text: str) -> List[str]:
    from flaretune.errors import ConfigError
    from flaretune.ops.quant import validate_qtype
    try:
        return [validate_qtype(t, owner="--types") for t in text.split(",") if t.strip()]
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=parse_params, default="100M", help="state dict size: 100M, 1.5M, 2e6")
    parser.add_argument("--json", dest="json_out", metavar="OUT", help="write the rows as a JSON list here")
    parser.add_argument("--plot", metavar="PNG", help="plot path (default: next to OUT, else ./bench_quantize.png)")
    parser.add_argument("--types", type=_parse_types, default=list(_OUR_TYPES),
                        help="comma-separated flaretune types (default: all)")
    from flaretune.cliargs import positive_int

    parser.add_argument("--repeat", type=positive_int, default=3,
                        help="timed runs per row; the best counts (default 3)")
    parser.add_argument("--arch", choices=("llama", "bert"), default="llama",
                        help="state dict shape: llama (SmolLM2-like, no biases) or bert (biases + LayerNorm)")
    parser.add_argument("--no-nvflare", action="store_true", help="skip NVFlare's ModelQuantizer rows")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 is steadier on a busy machine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adapter", action="store_true",
                        help="instead: the jobs' LoRA adapter messages, packed vs one array per tensor "
                             "(uses --types, --json, --plot, --seed; see flaretune.bench.quantize_adapter)")
    parser.add_argument("--trained", metavar="DIR",
                        help="--adapter: a job's saved global adapters (round-*.safetensors) instead of fresh ones")
    parser.add_argument("--container", choices=("numpy", "torch"), default="numpy",
                        help="--adapter tensors: numpy (as the executors send them) or torch")


# --- the state dict --------------------------------------------------------------------------


def model_shapes(n_params: int, arch: str = "llama") -> Dict[str, tuple]:
    """Tensor shapes of a transformer with about ``n_params`` parameters (SmolLM2 or BERT proportions).

    The hidden size follows the family's depth/width ratio, the embedding takes a fixed share and
    the number of layers fills the rest.
    """
    if arch == "llama":  # SmolLM2-135M: hidden 576, 30 layers (depth = hidden / 19.2), kv 192, MLP 1536
        hidden = _round64((n_params / 0.72) ** (1 / 3))
        per_layer, emb_share, max_vocab = 2 * hidden * (hidden + _round64(hidden / 3)) + 3 * hidden * _round64(
            8 * hidden / 3), 0.25, 49152
    else:  # BERT-base: hidden 768, 12 layers (depth = hidden / 64), FFN 4x
        hidden = _round64((0.8 * n_params / 0.1875) ** (1 / 3))
        per_layer, emb_share, max_vocab = 12 * hidden * hidden + 13 * hidden, 0.2, 30522
    vocab = min(max_vocab, max(64, int(emb_share * n_params / hidden) // 64 * 64))
    layers = max(1, round((n_params - vocab * hidden) / per_layer))
    return _llama(hidden, layers, vocab) if arch == "llama" else _bert(hidden, layers, vocab)


def _round64(x: float) -> int:
    return max(64, int(round(x / 64)) * 64)


def _llama(h: int, layers: int, vocab: int) -> Dict[str, tuple]:
    kv, mlp = _round64(h / 3), _round64(8 * h / 3)
    shapes = {"model.embed_tokens.weight": (vocab, h)}  # tied with the LM head, as in SmolLM2
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                       p + "mlp.gate_proj.weight": (mlp, h), p + "mlp.up_proj.weight": (mlp, h),
                       p + "mlp.down_proj.weight": (h, mlp), p + "input_layernorm.weight": (h,),
                       p + "post_attention_layernorm.weight": (h,)})
    shapes["model.norm.weight"] = (h,)
    return shapes


def _bert(h: int, layers: int, vocab: int) -> Dict[str, tuple]:
    shapes = {"embeddings.word_embeddings.weight": (vocab, h), "embeddings.position_embeddings.weight": (512, h),
              "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name, shape in (("attention.self.query", (h, h)), ("attention.self.key", (h, h)),
                            ("attention.self.value", (h, h)), ("attention.output.dense", (h, h)),
                            ("intermediate.dense", (4 * h, h)), ("output.dense", (h, 4 * h))):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = shape, (shape[0],)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + ln + ".weight"], shapes[p + ln + ".bias"] = (h,), (h,)
    return shapes


def build_state_dict(n_params: int, arch: str = "llama", seed: int = 0) -> dict:
    """fp32 weights ~N(0, 0.02) (a few 10x outliers), norms ~1, biases ~N(0, 0.02)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in model_shapes(n_params, arch).items():
        t = torch.randn(shape, generator=gen).mul_(0.02)
        if "norm" in name.lower() and name.endswith("weight"):
            t.add_(1.0)
        elif len(shape) == 2:
            hot = torch.randint(0, t.numel(), (max(1, t.numel() // 10_000),), generator=gen)
            t.view(-1)[hot] *= 10.0
        out[name] = t
    return out


# --- measuring -------------------------------------------------------------------------------


class _Row:
    def __init__(self, impl: str, qtype: str, native: Optional[str], make: Optional[Callable], patch: bool = False):
        self.impl, self.type, self.native, self.make, self.patch = impl, qtype, native, make, patch
        self.tq: List[float] = []
        self.tdq: List[float] = []
        self.wire = self.err = self.error = None
        self.loaded = None  # (kind, data, meta) of the deserialized quantized DXO

    def result(self, fp32_bytes: int, copy_roundtrip_mb_s: Optional[float]) -> dict:
        mb = fp32_bytes / 1e6
        q = mb / min(self.tq) if self.tq else None
        dq = mb / min(self.tdq) if self.tdq else None
        rt = mb / (min(self.tq) + min(self.tdq)) if self.tq and self.tdq else None
        row = {"impl": self.impl, "type": self.type, "wire_bytes": self.wire, "fp32_bytes": fp32_bytes,
               "max_rel_err": self.err, "quantize_mb_s": _r(q), "dequantize_mb_s": _r(dq),
               "wire_pct": _r(100.0 * self.wire / fp32_bytes, 3) if self.wire else None,
               "roundtrip_mb_s": _r(rt),
               "roundtrip_vs_copy": _r(rt / copy_roundtrip_mb_s, 3) if rt and copy_roundtrip_mb_s else None,
               "runs": len(self.tq)}
        if self.native:
            row["impl_type"] = self.native
        if self.patch:
            row["note"] = "torch.Tensor.cuda patched to a no-op (benchmark only)"
        if self.error:
            row["error"] = self.error
        return row


def _r(x, digits=1):
    return None if x is None else round(float(x), digits)


@contextlib.contextmanager
def _cuda_noop(active: bool):
    import torch
    if not active:
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def _shareable(kind, data, meta):
    from nvflare.apis.dxo import DXO
    return DXO(data_kind=kind, data=dict(data), meta=dict(meta)).to_shareable()  # filters may mutate these


def _max_rel_err(ref: dict, got: dict) -> float:
    import torch
    worst = 0.0
    for name, x in ref.items():
        y = torch.as_tensor(got[name]).reshape(x.shape).float()
        worst = max(worst, float((x - y).abs().max() / x.abs().max().clamp_min(1e-30)))
    return worst


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _first_run(row: _Row, ref: dict) -> None:
    from nvflare.apis.dxo import DataKind, from_shareable
    from nvflare.apis.fl_context import FLContext
    from nvflare.fuel.utils import fobs
    try:
        qf, dqf = row.make()
        with _cuda_noop(row.patch):
            out, t = _timed(lambda: qf.process(_shareable(DataKind.WEIGHTS, ref, {}), FLContext()))
        row.tq.append(t)
        wire = fobs.dumps(out)
        row.wire = len(wire)
        del out
        dxo = from_shareable(fobs.loads(wire))
        del wire
        row.loaded = (dxo.data_kind, dxo.data, dxo.meta)
        with _cuda_noop(row.patch):
            back, t = _timed(lambda: dqf.process(_shareable(*row.loaded), FLContext()))
        row.tdq.append(t)
        row.err = _r(_max_rel_err(ref, from_shareable(back).data), 6)
    except Exception as err:  # a failed row is a result, not a crash
        row.error = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        row.tq, row.tdq, row.loaded = [], [], None


def _warm_up(row: _Row) -> None:
    """One untimed run on a small dict: lazy imports, lookup tables, first-call kernel set-up."""
    import torch
    from nvflare.apis.dxo import DataKind, from_shareable
    from nvflare.apis.fl_context import FLContext
    try:
        qf, dqf = row.make()
        with _cuda_noop(row.patch):
            out = qf.process(_shareable(DataKind.WEIGHTS, {"w": torch.randn(256, 256)}, {}), FLContext())
            d = from_shareable(out)
            dqf.process(_shareable(d.data_kind, d.data, d.meta), FLContext())
    except Exception:  # the timed run records the failure
        pass


def _again(row: _Row, ref: dict) -> None:
    from nvflare.apis.dxo import DataKind
    from nvflare.apis.fl_context import FLContext
    qf, dqf = row.make()
    with _cuda_noop(row.patch):
        _, t = _timed(lambda: qf.process(_shareable(DataKind.WEIGHTS, ref, {}), FLContext()))
        row.tq.append(t)
        _, t = _timed(lambda: dqf.process(_shareable(*row.loaded), FLContext()))
        row.tdq.append(t)


def _rows(types: List[str], with_nvflare: bool) -> List[_Row]:
    from flaretune.filters.quantize import DequantizeFilter, QuantizeFilter
    rows = [_Row("flaretune", t, None, lambda t=t: (QuantizeFilter(t), DequantizeFilter())) for t in types]
    if not with_nvflare:
        return rows
    from nvflare.app_opt.pt.quantization.dequantizer import ModelDequantizer
    from nvflare.app_opt.pt.quantization.quantizer import ModelQuantizer
    for native, ours in _NVFLARE_TYPES.items():
        if ours in types or ours == "adaquant":
            rows.append(_Row("nvflare", ours, native, lambda n=native: (ModelQuantizer(n), ModelDequantizer())))
    for native, ours in _NVFLARE_TYPES.items():
        if native in _CUDA_ONLY and ours in types:
            rows.append(_Row("nvflare-cpu-patched", ours, native,
                             lambda n=native: (ModelQuantizer(n), ModelDequantizer()), patch=True))
    return rows


def run(args) -> int:
    if getattr(args, "adapter", False):
        from flaretune.bench.quantize_adapter import run as run_adapter

        return run_adapter(args)
    import torch
    from nvflare.apis.dxo import DXO, DataKind

    from flaretune.wire import register_decomposers, shareable_bytes

    register_decomposers()
    logging.getLogger("nvflare").setLevel(logging.CRITICAL)  # NVFlare logs its own .cuda() failures loudly
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # from NVFlare's adaquant

    say = lambda msg: print(msg, flush=True)  # noqa: E731
    if args.threads:
        torch.set_num_threads(args.threads)
    ref = build_state_dict(args.params, args.arch, args.seed)
    n_params = sum(t.numel() for t in ref.values())
    fp32_bytes = n_params * 4
    say(f"bench quantize: {args.arch}-like fp32 state dict, {n_params / 1e6:.2f}M params in {len(ref)} tensors "
        f"({fp32_bytes / 1e6:.1f} MB); torch {torch.__version__}, {torch.get_num_threads()} threads on "
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at start), "
        f"CUDA {'available' if torch.cuda.is_available() else 'not available'}")

    copy = _Row("copy", "fp32", None, None)
    copy.wire = shareable_bytes(DXO(DataKind.WEIGHTS, dict(ref)).to_shareable())
    copy.err = 0.0
    rows = _rows(args.types, not args.no_nvflare)
    repeat = max(1, args.repeat)
    for rep in range(repeat):
        copy.tq.append(_timed(lambda: {k: v.clone() for k, v in ref.items()})[1])
        copy.tdq.append(_timed(lambda: {k: v.clone() for k, v in ref.items()})[1])
        for row in rows:
            if rep == 0:
                say(f"  [{rep + 1}/{repeat}] {row.impl} {row.native or row.type} ...")
                _warm_up(row)
                _first_run(row, ref)
            elif row.loaded is not None and min(row.tq) + min(row.tdq) < _SLOW_S:
                say(f"  [{rep + 1}/{repeat}] {row.impl} {row.native or row.type} ...")
                _again(row, ref)
        row = None
    copy_rt = fp32_bytes / 1e6 / (min(copy.tq) + min(copy.tdq))
    results = [copy.result(fp32_bytes, copy_rt)] + [r.result(fp32_bytes, copy_rt) for r in rows]

    say("")
    say(format_table(results))
    if any(r.impl == "nvflare-cpu-patched" for r in rows):
        say("nvflare-cpu-patched: NVFlare's ModelQuantizer/ModelDequantizer with torch.Tensor.cuda replaced by a "
            "no-op during each call (benchmark only), so bitsandbytes runs its CPU kernels")
    say("")
    say(format_targets(results))
    say(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes share them; "
        f"throughputs are the best of the interleaved runs)")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(results, indent=1))
        say(f"rows written to {args.json_out}")
    plot_path = args.plot or (str(Path(args.json_out).with_suffix(".png")) if args.json_out else "bench_quantize.png")
    write_plot(results, plot_path, title=f"{args.arch}-like fp32 state dict, {n_params / 1e6:.1f}M params")
    say(f"plot written to {plot_path}")
    return 0


# --- reporting -------------------------------------------------------------------------------


def format_table(results: List[dict]) -> str:
    head = ("impl", "type", "wire MB", "% fp32", "max rel err", "quant MB/s", "dequant MB/s", "q+dq vs copy", "runs")
    lines, failed = [], []
    for r in results:
        name = r["type"] if r.get("impl_type", r["type"]) == r["type"] else f"{r['type']} ({r['impl_type']})"
        if r.get("error"):
            failed.append((r["impl"], name, "FAILED: " + r["error"]))
            continue
        lines.append((r["impl"], name, f"{r['wire_bytes'] / 1e6:.2f}", f"{r['wire_pct']:.3f}",
                      f"{r['max_rel_err']:.2e}", f"{r['quantize_mb_s']:.0f}", f"{r['dequantize_mb_s']:.0f}",
                      f"{r['roundtrip_vs_copy']:.2f}x", str(r["runs"])))
    widths = [max([len(head[i])] + [len(line[i]) for line in lines] + [len(f[i]) for f in failed if i < 2])
              for i in range(len(head))]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines]
    out += [f"{f[0].ljust(widths[0])}  {f[1].ljust(widths[1])}  {f[2]}" for f in failed]
    return "\n".join(out)


def format_targets(results: List[dict]) -> str:
    def get(impl, qtype):
        return next((r for r in results if r["impl"] == impl and r["type"] == qtype and not r.get("error")), None)

    out = ["targets (issue):"]
    for qtype, limit in (("blockwise8", 25.1), ("nf4", 13.0), ("fp4", 13.0)):
        r = get("flaretune", qtype)
        if r:
            out.append(f"  {qtype:10s} wire {r['wire_pct']:.3f}% of fp32 (target <= {limit}%): "
                       f"{'met' if r['wire_pct'] <= limit else 'MISSED'}")
    ours, theirs = get("flaretune", "float16"), get("nvflare", "float16")
    if ours and theirs:  # the dequantize side is the same fp16 -> fp32 cast in both: judge the round trip
        ok = ours["roundtrip_mb_s"] >= theirs["roundtrip_mb_s"]
        out.append(f"  float16    ours {ours['roundtrip_mb_s']:.0f} MB/s round trip ({ours['quantize_mb_s']:.0f} "
                   f"quant, {ours['dequantize_mb_s']:.0f} dequant) vs NVFlare {theirs['roundtrip_mb_s']:.0f} "
                   f"({theirs['quantize_mb_s']:.0f}, {theirs['dequantize_mb_s']:.0f}) (target: at least as fast): "
                   f"{'met' if ok else 'MISSED'}")
    ours, theirs = get("flaretune", "entropy"), get("nvflare", "adaquant")
    if ours:  # the ADAQUANT axes: bytes, error and quantize speed (issue: <= 10%, <= 0.03, >= 10x its speed)
        speed = ours["quantize_mb_s"] / theirs["quantize_mb_s"] if theirs else None
        vs = (f" vs NVFlare adaquant {theirs['wire_pct']:.3f}% at {theirs['max_rel_err']:.3f}, "
              f"{theirs['quantize_mb_s']:.0f} MB/s" if theirs else "")
        out.append(f"  entropy    wire {ours['wire_pct']:.3f}% of fp32 at max rel err {ours['max_rel_err']:.4f}, "
                   f"quantize {ours['quantize_mb_s']:.0f} MB/s{vs} (targets <= 10%, <= 0.03, >= 10x adaquant's "
                   f"speed): bytes {'met' if ours['wire_pct'] <= 10.0 else 'MISSED'}, error "
                   f"{'met' if ours['max_rel_err'] <= 0.03 else 'MISSED'}, speed "
                   + (f"{speed:.1f}x {'met' if speed >= 10.0 else 'MISSED'}" if speed else "not measured (no adaquant row)"))
        if theirs:
            lost = [axis for axis, ok in (("bytes", ours["wire_pct"] < theirs["wire_pct"]),
                                            ("error", ours["max_rel_err"] <= theirs["max_rel_err"]),
                                            ("quantize", ours["quantize_mb_s"] > theirs["quantize_mb_s"]),
                                            ("dequantize", ours["dequantize_mb_s"] > theirs["dequantize_mb_s"]))
                      if not ok]
            out.append("  entropy    beats adaquant on every axis (bytes, error, quantize, dequantize): "
                       + ("met" if not lost else "MISSED on " + ", ".join(lost)))
    r = get("flaretune", "blockwise8")
    if r:
        ref = get("nvflare-cpu-patched", "blockwise8")
        extra = f"; NVFlare's, made to run on CPU: {ref['roundtrip_vs_copy']:.2f}x" if ref else ""
        out.append(f"  blockwise8 quantize+dequantize {r['roundtrip_vs_copy']:.2f}x a tensor copy each way "
                   f"(target >= 0.3x): {'met' if r['roundtrip_vs_copy'] >= 0.3 else 'MISSED'}{extra}")
    return "\n".join(out)


def write_plot(results: List[dict], path: str, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if not r.get("error") and r["impl"] != "copy"]
    types = [t for t in dict.fromkeys(r["type"] for r in ok)]
    impls = [i for i in dict.fromkeys(r["impl"] for r in ok)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / max(1, len(impls))
    for j, impl in enumerate(impls):
        by_type = {r["type"]: r for r in ok if r["impl"] == impl}
        xs = [i + (j - (len(impls) - 1) / 2) * width for i, t in enumerate(types) if t in by_type]
        present = [t for t in types if t in by_type]
        axes[0].bar(xs, [by_type[t]["wire_pct"] for t in present], width, label=impl)
        axes[1].bar(xs, [by_type[t]["roundtrip_mb_s"] for t in present], width, label=impl)
    copy = next((r for r in results if r["impl"] == "copy"), None)
    for ax, ylabel in ((axes[0], "wire bytes, % of fp32 (FOBS)"),
                       (axes[1], "quantize+dequantize MB/s (fp32 MB / (t_q + t_dq))")):
        ax.set_xticks(range(len(types)))
        ax.set_xticklabels(types)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    for y, style, label in ((25.1, ":", "blockwise8 target 25.1%"), (13.0, "--", "nf4/fp4 target 13%"),
                            (10.0, "-.", "entropy target 10%")):
        axes[0].axhline(y, color="grey", linestyle=style, linewidth=1, label=label)
    axes[0].legend(fontsize=8)
    if copy:
        axes[1].axhline(copy["roundtrip_mb_s"], color="black", linewidth=1, label="tensor copy each way")
        axes[1].axhline(0.3 * copy["roundtrip_mb_s"], color="black", linestyle=":", linewidth=1, label="0.3x copy")
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # python -m flaretune.bench.quantize --params 2M
    p = argparse.ArgumentParser(prog="flaretune bench quantize")
    add_arguments(p)
    sys.exit(run(p.parse_args()))
