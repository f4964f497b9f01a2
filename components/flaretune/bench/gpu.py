"""``flaretune bench gpu --json OUT``: the one prepared GPU check (issue #15), under 8 minutes on one GPU.

1. **QLoRA on SmolLM2-135M on CUDA** (arXiv:2305.14314): LoRA on the float32 base vs LoRA on the NF4,
   double-quantized base (bitsandbytes ``Linear4bit`` on CUDA), same bank messages, same steps: GPU memory
   after building and peak while training (``torch.cuda.max_memory_allocated``), seconds per step, answer
   loss and label accuracy on held-out messages before and after.
2. **Quantization on CUDA**: our kernels (:mod:`flaretune.ops.quant`) on a CUDA state dict vs NVFlare's
   ``ModelQuantizer``/``ModelDequantizer`` (whose blockwise8/float4/normfloat4 modes need CUDA) on the same
   dict: seconds, max relative error. Then ``flaretune bench quantize`` itself (the filters as FLARE runs
   them, with FOBS wire bytes) is run once on this machine, where NVFlare's CUDA rows work unpatched.

``--dry-run``: the same code on the CPU with tiny-smollm2, 2 steps and a 1M-parameter dict (NVFlare's
CUDA-only modes are then recorded as failed), so CI proves the script runs end to end.
Not yet run on a GPU: no GPU machine was available when it was written.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

_QTYPES = {"float16": "float16", "blockwise8": "blockwise8", "nf4": "normfloat4", "fp4": "float4"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", required=True, help="write the results here")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, small sizes (for CI)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per method (dry run: 2)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--params", default="100M", help="state dict size for the quantization rows (dry run: 1M)")
    parser.add_argument("--no-bench-quantize", action="store_true", help="skip the 'flaretune bench quantize' run")
    parser.add_argument("--quantize-timeout", type=float, default=240.0,
                        help="seconds allowed to 'flaretune bench quantize' (default 240, to stay under 8 minutes)")


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _on(batch, device):
    return tuple(t.to(device) for t in batch)


def _accuracy(model, trainer, encoded, device) -> float:
    """Label accuracy by the next-token log-probability of each label word's first token after the prompt."""
    import torch

    index = torch.tensor([ids[0] for ids in trainer.candidate_ids], device=device)
    labels = [trainer.label_words.index(e.label) for e in encoded]
    right = 0
    model.eval()
    with torch.no_grad():
        for e, label in zip(encoded, labels):
            ids = torch.tensor([e.input_ids[: e.prompt_length]], device=device)
            logits = model(input_ids=ids).logits[0, -1]
            right += int(int(logits[index].argmax()) == label)
    return right / max(1, len(encoded))


def _answer_loss(module, batches, device) -> float:
    import torch

    with torch.no_grad():
        losses = [float(module(*_on(b, device)).loss) for b in batches]
    return sum(losses) / len(losses)


def measure_qlora(method: str, model_name: str, steps: int, batch_size: int, device: str) -> dict:
    """One method's build, ``steps`` AdamW steps and scores on ``device``."""
    import torch

    from flaretune.data.finance import make_bank
    from flaretune.models.lora import PeftSpec
    from flaretune.train import loop
    from flaretune.train.causal import AnswerLoss, InstructTrainer
    from flaretune.train.methods import make_method

    spec = PeftSpec(model_name=model_name, target_modules=["q_proj", "v_proj"], lora_r=8, lora_alpha=16,
                    lora_dropout=0.05)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    options = {"device": device} if method == "qlora" else {}
    model = make_method(method, spec, **options).build().to(device)
    _sync(device)
    row = {"method": method, "model": model_name, "device": device, "build_s": time.perf_counter() - started}
    if device == "cuda":
        row["memory_after_build_mb"] = torch.cuda.memory_allocated() / 2**20
    trainer = InstructTrainer(spec, max_length=96, model=model, system_prompt="You are a financial analyst.")
    records, test = make_bank(0, 3, 0, 0.5, n_train=steps * batch_size, n_test=24, style="messages")
    train_batches = list(loop.batches(trainer.encode(records), batch_size, trainer.pad_id))
    test_encoded = trainer.encode(test)
    test_batches = list(loop.batches(test_encoded, batch_size, trainer.pad_id))
    module = AnswerLoss(model)
    row["loss_before"] = _answer_loss(module, test_batches, device)
    row["accuracy_before"] = _accuracy(model, trainer, test_encoded, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-3)
    model.train()
    times = []
    for batch in train_batches[:steps]:
        _sync(device)
        t0 = time.perf_counter()
        loss = module(*_on(batch, device)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    row["seconds_per_step"] = sorted(times)[len(times) // 2] if times else None  # median
    row["steps"] = len(times)
    row["trainable_params"] = sum(p.numel() for p in params)
    if device == "cuda":
        row["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    row["loss_after"] = _answer_loss(module, test_batches, device)
    row["accuracy_after"] = _accuracy(model, trainer, test_encoded, device)
    if method == "qlora":
        from flaretune.models.qlora import base_storage

        row["base_storage"] = base_storage(model)
    del model, trainer, module, optimizer
    return row


def _timed(fn, device, repeat=3):
    best, out = float("inf"), None
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return out, best


def measure_quantization(n_params: int, device: str) -> list:
    """Ours (ops.quant on ``device`` tensors) vs NVFlare's ModelQuantizer on the same state dict."""
    import torch
    from nvflare.apis.dxo import DXO, DataKind, from_shareable
    from nvflare.apis.fl_context import FLContext
    from nvflare.app_opt.pt.quantization.dequantizer import ModelDequantizer
    from nvflare.app_opt.pt.quantization.quantizer import ModelQuantizer

    from flaretune.bench.quantize import build_state_dict
    from flaretune.ops import quant

    ref = {k: torch.as_tensor(v).to(device) for k, v in build_state_dict(n_params, "llama").items()}
    mb = sum(t.numel() * 4 for t in ref.values()) / 1e6

    def rel_err(got):
        return max(float((x - torch.as_tensor(got[k]).to(x.device).reshape(x.shape).float()).abs().max()
                         / x.abs().max().clamp_min(1e-30)) for k, x in ref.items())

    rows = []
    for ours, native in _QTYPES.items():
        packed, tq = _timed(lambda: {k: quant.quantize(v, ours) for k, v in ref.items()}, device)
        back, tdq = _timed(lambda: {k: quant.dequantize(*packed[k]) for k in ref}, device)
        rows.append({"impl": "flaretune", "type": ours, "device": device, "quantize_mb_s": mb / tq,
                     "dequantize_mb_s": mb / tdq, "max_rel_err": rel_err(back)})
        row = {"impl": "nvflare", "type": ours, "impl_type": native, "device": device}
        try:
            def q():
                dxo = DXO(data_kind=DataKind.WEIGHTS, data=dict(ref), meta={})
                return ModelQuantizer(native).process(dxo.to_shareable(), FLContext())

            shareable, tq = _timed(q, device)
            d = from_shareable(shareable)
            restored, tdq = _timed(lambda: ModelDequantizer().process(
                DXO(data_kind=d.data_kind, data=dict(d.data), meta=dict(d.meta)).to_shareable(), FLContext()), device)
            row.update(quantize_mb_s=mb / tq, dequantize_mb_s=mb / tdq, max_rel_err=rel_err(from_shareable(restored).data))
        except Exception as err:  # NVFlare's 8/4-bit modes call .cuda(): a CPU machine records the failure
            row["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        rows.append(row)
    return rows


def run(args) -> int:
    import torch

    from flaretune.bench.quantize import parse_params

    started = time.perf_counter()
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("flaretune bench gpu: no CUDA device here; use --dry-run on a CPU machine")
    model = "tiny-smollm2" if args.dry_run else "smollm2-135m"
    steps = 2 if args.dry_run else args.steps
    n_params = parse_params("1M" if args.dry_run else args.params)
    out = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)",
           "torch": torch.__version__, "dry_run": args.dry_run}
    out["qlora"] = [measure_qlora(m, model, steps, args.batch_size, device) for m in ("lora", "qlora")]
    for row in out["qlora"]:
        print(f"{row['method']:<6} build {row['build_s']:.1f} s, {row['seconds_per_step'] or 0:.3f} s/step, "
              f"peak {row.get('peak_memory_mb', float('nan')):.0f} MB, loss {row['loss_before']:.3f} -> "
              f"{row['loss_after']:.3f}, accuracy {row['accuracy_before']:.3f} -> {row['accuracy_after']:.3f}", flush=True)
    out["quantization"] = measure_quantization(n_params, device)
    for row in out["quantization"]:
        print(f"{row['impl']:<10}{row['type']:<11}" + (row.get("error") or
              f"q {row['quantize_mb_s']:.0f} MB/s, dq {row['dequantize_mb_s']:.0f} MB/s, err {row['max_rel_err']:.4f}"))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")  # kept if what follows runs out of time
    if not args.no_bench_quantize:
        target = Path(args.json).with_name(Path(args.json).stem + "_bench_quantize.json")
        command = [sys.executable, "-m", "flaretune.cli", "bench", "quantize", "--params", "1M" if args.dry_run
                   else args.params, "--container", "torch", "--repeat", "1" if args.dry_run else "3",
                   "--json", str(target)]
        try:
            rc = subprocess.run(command, timeout=args.quantize_timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        out["bench_quantize"] = {"command": " ".join(command[1:]), "rc": rc, "json": str(target)}
    out["total_s"] = time.perf_counter() - started
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json} ({out['total_s']:.0f} s)")
    return 0
