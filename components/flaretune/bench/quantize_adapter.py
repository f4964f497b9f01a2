"""``flaretune bench quantize --adapter``: packed vs per-tensor quantization on the jobs' LoRA adapter messages.

The two messages the jobs send each round: ``clinical_ner``'s MiniLM adapter (LoRA r8 on
query/value plus the 13-label token classification head) and ``fin_instruct``'s SmolLM2-135M
adapter (r8 on q_proj/v_proj). Names and shapes are PEFT's own: each job's :class:`PeftSpec`
applied to its base model's config on the meta device, so no weights are loaded. Values follow
PEFT: ``lora_A`` as PEFT initialises it (kaiming-uniform, bound 1/sqrt(fan_in)), ``lora_B``
~N(0, 0.005) (it starts at zero and grows with training), head weights and biases ~N(0, 0.02).
The tensors are numpy float32 arrays, as the executors send them (``--container torch`` for torch).
``--trained DIR`` measures instead the global adapters a job saved (``round-*.safetensors`` of its
persistor, e.g. after ``flaretune compare``), packed, one row per file and type.

For every type, :class:`QuantizeFilter` runs twice on the same WEIGHTS DXO: packed (the default)
and ``pack_numel=0`` (one array per tensor, the earlier format). As in ``bench quantize``,
``wire_bytes`` is ``len(fobs.dumps(shareable))`` of the filter's output, ``wire_pct`` its share of
the fp32 tensor bytes, and the dequantizer runs on what ``fobs.loads`` gives back; ``max_abs_err``
is max |x - x_hat| over all tensors, ``max_rel_err`` the max over tensors of max|x - x_hat| / max|x|.
"""

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Dict, List

ADAPTERS = {  # the persistor arguments of each job's config_fed_server.json
    "minilm-ner": {"job": "clinical_ner", "spec": {"model_name": "minilm-ner", "lora_r": 8,
                                                   "target_modules": ["query", "value"]}},
    "smollm2-135m": {"job": "fin_instruct", "spec": {"model_name": "smollm2-135m", "lora_r": 8,
                                                     "target_modules": ["q_proj", "v_proj"]}},
}
TARGETS = {"blockwise8": 25.1, "nf4": 13.0, "fp4": 13.0}  # % of fp32, as on a 100M-parameter model (issue #18)


def peft_spec(adapter: str):
    from flaretune.data.types import CLINICAL_NOTES_LABELS
    from flaretune.models.lora import PeftSpec

    spec = dict(ADAPTERS[adapter]["spec"])
    if adapter == "minilm-ner":
        spec["labels"] = list(CLINICAL_NOTES_LABELS)
    return PeftSpec(**spec)


@lru_cache(maxsize=None)
def adapter_shapes(adapter: str) -> Dict[str, tuple]:
    """``{name: shape}`` of the adapter's ``get_peft_model_state_dict``, built on the meta device."""
    import torch
    import transformers
    from peft import get_peft_model, get_peft_model_state_dict

    spec = peft_spec(adapter)
    config = _base_config(spec)
    auto = transformers.AutoModelForTokenClassification if spec.is_token_classification else \
        transformers.AutoModelForCausalLM
    with torch.device("meta"):
        model = get_peft_model(auto.from_config(config), spec.lora_config())
    return {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model, save_embedding_layers=False).items()}


def _base_config(spec):
    from transformers import AutoConfig

    from flaretune.models.assets import MINILM, SMOLLM2, cache_dir, package_dir
    from flaretune.models import smollm2

    if spec.model_name == "minilm-ner":
        return AutoConfig.from_pretrained(str(package_dir(MINILM) / "model"), num_labels=len(spec.labels))
    converted = cache_dir() / smollm2._MODEL_DIR
    if (converted / smollm2._DONE).exists():  # the dequantized model's config, when it is cached
        return AutoConfig.from_pretrained(str(converted))
    return AutoConfig.from_pretrained(str(package_dir(SMOLLM2)), gguf_file=smollm2.GGUF_FILE)  # header only


def build_adapter(adapter: str, seed: int = 0, container: str = "numpy") -> dict:
    """fp32 values for :func:`adapter_shapes` (see the module docstring for the distributions)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in adapter_shapes(adapter).items():
        if "lora_A" in name:
            bound = 1.0 / math.sqrt(shape[1])
            t = torch.rand(shape, generator=gen).mul_(2 * bound).sub_(bound)
        else:
            t = torch.randn(shape, generator=gen).mul_(0.005 if "lora_B" in name else 0.02)
        out[name] = t.numpy() if container == "numpy" else t
    return out


def measure(adapter: str, types: List[str], seed: int = 0, container: str = "numpy") -> List[dict]:
    """One row per (type, layout), plus the fp32 message itself."""
    import numpy as np
    from nvflare.apis.dxo import DXO, DataKind
    from nvflare.fuel.utils import fobs

    from flaretune.wire import register_decomposers

    register_decomposers()
    ref = build_adapter(adapter, seed, container)
    fp32 = sum(int(v.nbytes) for v in ref.values())
    base = {"adapter": adapter, "job": ADAPTERS[adapter]["job"], "container": container, "tensors": len(ref),
            "params": sum(int(np.prod(v.shape)) for v in ref.values()), "fp32_bytes": fp32}

    def row(qtype, layout, wire, arrays, back):
        errs = [(float(np.abs(_np(back[k]) - _np(x)).max()), float(np.abs(_np(x)).max())) for k, x in ref.items()]
        return {**base, "type": qtype, "layout": layout, "wire_bytes": wire, "wire_pct": round(100.0 * wire / fp32, 3),
                "arrays": arrays, "max_abs_err": max(a for a, _ in errs),
                "max_rel_err": max(a / m for a, m in errs if m > 0)}

    rows = [row("fp32", "none", len(fobs.dumps(DXO(DataKind.WEIGHTS, dict(ref)).to_shareable())), len(ref), ref)]
    for qtype in types:
        for layout, pack_numel in (("unpacked", 0), ("packed", 1 << 20)):
            rows.append(row(qtype, layout, *_round_trip(ref, qtype, pack_numel)))
    return rows


def _round_trip(ref: dict, qtype: str, pack_numel: int = 1 << 20):
    """(FOBS bytes, arrays sent, restored tensors) of ``ref`` through QuantizeFilter and DequantizeFilter."""
    from nvflare.apis.dxo import DXO, DataKind, from_shareable
    from nvflare.apis.fl_context import FLContext
    from nvflare.fuel.utils import fobs

    from flaretune.filters.quantize import DequantizeFilter, QuantizeFilter

    sent = QuantizeFilter(qtype, log_bytes=False, pack_numel=pack_numel).process(
        DXO(DataKind.WEIGHTS, dict(ref)).to_shareable(), FLContext())
    wire = fobs.dumps(sent)
    back = from_shareable(DequantizeFilter(log_bytes=False).process(fobs.loads(wire), FLContext())).data
    return len(wire), len(from_shareable(sent).data), back


def _np(x):
    import numpy as np
    import torch

    return x.float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def measure_trained(folder: str, types: List[str]) -> List[dict]:
    """Packed rows for every ``round-*.safetensors`` a job's persistor wrote (its global adapters)."""
    import numpy as np
    from safetensors.numpy import load_file

    from flaretune.errors import ConfigError
    from flaretune.wire import register_decomposers

    register_decomposers()
    files = sorted(Path(folder).glob("round-*.safetensors"))
    if not files:
        raise ConfigError(f"--trained {folder}: no round-*.safetensors there (a job's global_model folder "
                          f"holds them, e.g. <compare out>/workspace/server/simulate_job/global_model)")
    rows = []
    for path in files:
        ref = {k: v.astype(np.float32) for k, v in load_file(str(path)).items()}
        fp32 = sum(int(v.nbytes) for v in ref.values())
        for qtype in types:
            wire, _, back = _round_trip(ref, qtype)
            errs = [float(np.abs(_np(back[k]) - x).max() / np.abs(x).max()) for k, x in ref.items() if np.abs(x).max() > 0]
            rows.append({"adapter": "trained", "file": path.name, "tensors": len(ref), "fp32_bytes": fp32,
                         "type": qtype, "layout": "packed", "wire_bytes": wire,
                         "wire_pct": round(100.0 * wire / fp32, 3), "max_rel_err": max(errs)})
    return rows


def _run_trained(args, say) -> int:
    rows = measure_trained(args.trained, args.types)
    files = list(dict.fromkeys(r["file"] for r in rows))
    say(f"trained adapters in {args.trained}: {len(files)} files, {rows[0]['tensors']} tensors, "
        f"{rows[0]['fp32_bytes']:,} fp32 bytes each; packed messages, % of fp32 (max rel err)")
    by = {(r["file"], r["type"]): r for r in rows}
    say("  ".join(["file".ljust(22)] + [t.rjust(18) for t in args.types]))
    for f in files:
        say("  ".join([f.ljust(22)] + [f"{by[f, t]['wire_pct']:.3f} ({by[f, t]['max_rel_err']:.3f})".rjust(18)
                                       for t in args.types]))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(rows, indent=1))
        say(f"rows written to {args.json_out}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in args.types:
        ax.plot(range(len(files)), [by[f, t]["wire_pct"] for f in files], marker="o", label=t)
    ax.set_xticks(range(len(files)))
    ax.set_xticklabels([f.split(".")[0] for f in files], rotation=45, fontsize=7)
    ax.set_ylabel("wire bytes, % of fp32 (FOBS)")
    ax.set_title(f"trained global adapters ({args.trained})", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plot_path = args.plot or (str(Path(args.json_out).with_suffix(".png")) if args.json_out
                              else "bench_quantize_trained.png")
    Path(plot_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot_path, dpi=110)
    plt.close(fig)
    say(f"plot written to {plot_path}")
    return 0


def run(args) -> int:
    from nvflare.apis.dxo import DXO, DataKind

    from flaretune.wire import shareable_bytes

    say = lambda msg: print(msg, flush=True)  # noqa: E731
    if getattr(args, "trained", None):
        return _run_trained(args, say)
    envelope = shareable_bytes(DXO(DataKind.WEIGHTS, {}).to_shareable())
    results = []
    for adapter in ADAPTERS:
        rows = measure(adapter, args.types, args.seed, args.container)
        first = rows[0]
        say(f"\n{adapter} adapter ({first['job']}): {first['params']:,} params in {first['tensors']} tensors, "
            f"{first['fp32_bytes']:,} fp32 bytes, {args.container} arrays; FLARE's empty WEIGHTS message alone is "
            f"{envelope} B ({100.0 * envelope / first['fp32_bytes']:.3f}% of fp32)")
        say(format_table(rows))
        say(format_targets(rows, envelope))
        results += rows
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(results, indent=1))
        say(f"rows written to {args.json_out}")
    plot_path = args.plot or (str(Path(args.json_out).with_suffix(".png")) if args.json_out
                              else "bench_quantize_adapter.png")
    write_plot(results, plot_path)
    say(f"plot written to {plot_path}")
    return 0


def format_table(rows: List[dict]) -> str:
    by = {(r["type"], r["layout"]): r for r in rows}
    head = ("type", "unpacked % fp32", "packed % fp32", "packed bytes", "arrays", "max abs err unpacked / packed",
            "max rel err unpacked / packed")
    lines = [("fp32", f"{by['fp32', 'none']['wire_pct']:.3f}", "", f"{by['fp32', 'none']['wire_bytes']:,}",
              str(by["fp32", "none"]["arrays"]), "", "")]
    for qtype in dict.fromkeys(r["type"] for r in rows if r["type"] != "fp32"):
        u, p = by[qtype, "unpacked"], by[qtype, "packed"]
        lines.append((qtype, f"{u['wire_pct']:.3f}", f"{p['wire_pct']:.3f}", f"{p['wire_bytes']:,}",
                      f"{u['arrays']} -> {p['arrays']}", f"{u['max_abs_err']:.2e} / {p['max_abs_err']:.2e}",
                      f"{u['max_rel_err']:.2e} / {p['max_rel_err']:.2e}"))
    widths = [max(len(head[i]), *(len(line[i]) for line in lines)) for i in range(len(head))]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines])


def format_targets(rows: List[dict], envelope: int = 0) -> str:
    """Target lines; a miss also says the floor: FLARE's empty message plus the bare codes (1 or 1/2 B a value)."""
    out = []
    for r in rows:
        if r["layout"] == "packed" and r["type"] in TARGETS:
            limit = TARGETS[r["type"]]
            line = (f"  {r['type']:10s} packed {r['wire_pct']:.3f}% of fp32 (target <= {limit}%): "
                    f"{'met' if r['wire_pct'] <= limit else 'MISSED'}")
            if r["wire_pct"] > limit:
                floor = 100.0 * (envelope + r["params"] * (1.0 if r["type"] == "blockwise8" else 0.5)) / r["fp32_bytes"]
                line += (f"; FLARE's empty message ({envelope} B) plus the bare codes alone are {floor:.3f}% "
                         f"of this adapter")
            out.append(line)
    return "targets (issue #18, as on a 100M-parameter model):\n" + "\n".join(out) if out else ""


def write_plot(rows: List[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adapters = list(dict.fromkeys(r["adapter"] for r in rows))
    fig, axes = plt.subplots(1, len(adapters), figsize=(6.5 * len(adapters), 4.8), squeeze=False)
    for ax, adapter in zip(axes[0], adapters):
        mine = [r for r in rows if r["adapter"] == adapter and r["type"] != "fp32"]
        types = list(dict.fromkeys(r["type"] for r in mine))
        for j, layout in enumerate(("unpacked", "packed")):
            values = [next(r["wire_pct"] for r in mine if r["type"] == t and r["layout"] == layout) for t in types]
            bars = ax.bar([i + (j - 0.5) * 0.4 for i in range(len(types))], values, 0.4,
                          label=f"{layout} ({'one array per tensor' if j == 0 else 'one array per message'})")
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
        for y, style, label in ((25.1, ":", "blockwise8 target 25.1%"), (13.0, "--", "nf4/fp4 target 13%")):
            ax.axhline(y, color="grey", linestyle=style, linewidth=1, label=label)
        first = next(r for r in rows if r["adapter"] == adapter)
        ax.set_title(f"{adapter} LoRA adapter ({first['job']}): {first['params']:,} params, "
                     f"{first['tensors']} tensors", fontsize=10)
        ax.set_xticks(range(len(types)))
        ax.set_xticklabels(types)
        ax.set_ylabel("wire bytes, % of fp32 (FOBS)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
