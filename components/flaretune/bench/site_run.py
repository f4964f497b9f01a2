"""One client method's in-process FedAvg run, in its own process, so its peak memory is its own.

    python -m flaretune.bench.site_run --method lora|qlora|forward_only --scenario ner|fin --json OUT ...

Used by ``flaretune bench forward-only`` and ``flaretune bench qlora``, which start one fresh process per
method. Each round every site starts from the global adapter, trains ``--steps`` steps of its SYNTHETIC
data (hospitals: clinical NER; banks: sentiment instructions), and the job's FedAvg strategy averages the
adapters (no FLARE, no quantization on the wire: the sites share one model object, so the process holds
one site's model, as a site does). After every round the global adapter is scored on the sites' pooled
test records.

Memory: ``peak_rss_mb`` is the process's ``ru_maxrss`` (building the model included: a QLoRA base is
loaded in float32 before it is quantized); ``rss_after_build_mb`` the resident memory once the model is
built and freed heap handed back (``malloc_trim``); ``train_peak_rss_mb`` Linux's VmHWM after it was reset
(``/proc/self/clear_refs``) at that point, i.e. the peak while training and scoring.
Seconds per round are one site's training time (the mean over sites), scoring excluded.
"""

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path


def _arguments(argv=None):
    p = argparse.ArgumentParser(prog="python -m flaretune.bench.site_run", description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True, choices=("lora", "qlora", "forward_only"))
    p.add_argument("--scenario", default="ner", choices=("ner", "fin"))
    p.add_argument("--model", default="", help="base model (default: minilm-ner / smollm2-135m)")
    p.add_argument("--sites", type=int, default=3)
    p.add_argument("--n-train", type=int, default=48, help="training records per site")
    p.add_argument("--n-test", type=int, default=20, help="test records per site")
    p.add_argument("--rounds", type=int, default=3, help="rounds at least")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="keep going (up to 4x --rounds) until this many seconds of one site's training")
    p.add_argument("--steps", type=int, default=8, help="local steps per round and site")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-3, help="AdamW rate (lora, qlora)")
    p.add_argument("--zo-lr", type=float, default=1e-3, help="forward-only SGD rate")
    p.add_argument("--perturbations", type=int, default=4)
    p.add_argument("--epsilon", type=float, default=1e-3)
    p.add_argument("--candidates", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True)
    return p.parse_args(argv)


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _release_freed_memory() -> None:
    """Hand freed heap back to the OS (glibc ``malloc_trim``), so a float32 base that a method dropped after
    quantizing it no longer counts in the RSS that follows."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _trainer_and_data(args):
    """``(trainer, [site records], test records, score key)``."""
    from flaretune.models.lora import PeftSpec

    method = "qlora" if args.method == "qlora" else "lora"
    if args.scenario == "ner":
        from flaretune.data.clinical import labels_for_style, make_hospital
        from flaretune.train.ner_trainer import NerTrainer

        spec = PeftSpec(model_name=args.model or "minilm-ner", labels=labels_for_style("notes"), lora_r=8,
                        lora_alpha=16, lora_dropout=0.1, seed=args.seed)
        trainer = NerTrainer(spec, max_length=64, num_threads=args.threads, model=_build(method, spec))
        parts = [make_hospital(i, args.sites, seed=args.seed, n_train=args.n_train, n_test=args.n_test)
                 for i in range(args.sites)]
        key = "f1"
    else:
        from flaretune.data.finance import make_bank
        from flaretune.train.causal import InstructTrainer

        spec = PeftSpec(model_name=args.model or "smollm2-135m", labels=None, lora_r=8, lora_alpha=16,
                        lora_dropout=0.05, target_modules=["q_proj", "v_proj"], seed=args.seed)
        trainer = InstructTrainer(spec, max_length=96, num_threads=args.threads, model=_build(method, spec),
                                  system_prompt="You are a financial analyst.")
        parts = [make_bank(i, args.sites, args.seed, 0.5, n_train=args.n_train, n_test=args.n_test,
                           style="messages") for i in range(args.sites)]
        key = "accuracy"
    sites = [trainer.encode(train) for train, _ in parts]
    test = [e for _, t in parts for e in trainer.encode(t)]
    return trainer, sites, test, key


def _build(method: str, spec):
    from flaretune.train.methods import make_method

    return make_method(method, spec).build()


def main(argv=None) -> int:
    import torch

    from flaretune.aggregation.strategy import make_strategy
    from flaretune.aggregation.validation import aggregate_round
    from flaretune.ops import zo
    from flaretune.train import loop
    from flaretune.train.forward_only import ForwardOnlyStep

    args = _arguments(argv)
    torch.set_num_threads(args.threads)
    trainer, sites, test, key = _trainer_and_data(args)
    build_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _release_freed_memory()
    built_rss = _vm_rss_mb()
    reset = _reset_peak()
    strategy = make_strategy("fedavg")
    global_params = {k: v.numpy() for k, v in trainer.get_params().items()}
    adapter_bytes = sum(v.nbytes for v in global_params.values())
    names = [f"site-{i + 1}" for i in range(len(sites))]
    initial = float(trainer.evaluate(test)[key])
    rows, spent, replay_exact, max_rounds = [], 0.0, True, args.rounds * (4 if args.time_budget else 1)
    for r in range(max_rounds):
        if r >= args.rounds and spent >= args.time_budget:
            break
        results, seconds, upload = {}, [], []
        for s, (site, records) in enumerate(zip(names, sites)):
            trainer.set_params(global_params)
            if args.method == "forward_only":
                step = ForwardOnlyStep(learning_rate=args.zo_lr, perturbations=args.perturbations,
                                       epsilon=args.epsilon, candidates=args.candidates, seed=args.seed,
                                       round_index=r, num_rounds=max_rounds, site=s)
            else:
                step = loop.BackpropStep(learning_rate=args.lr, round_index=r, num_rounds=max_rounds)
            started = time.perf_counter()
            trainer.fit(records, epochs=100, batch_size=args.batch_size, seed=r * 10 + s, max_steps=args.steps,
                        step=step)
            seconds.append(time.perf_counter() - started)
            params = trainer.get_params()
            if args.method == "forward_only":
                sent = step.upload()
                upload.append(int(sent["projections"].nbytes))
                if s == 0:  # the server's shared-seed replay of this site's round equals what it trained
                    rebuilt = zo.replay([torch.as_tensor(v) for v in global_params.values()],
                                        sent["projections"].tolist(), args.seed, r, args.zo_lr, args.candidates, s)
                    replay_exact &= all(torch.equal(a, b) for a, b in zip(rebuilt, params.values()))
            else:
                upload.append(adapter_bytes)
            results[site] = ({k: v.numpy() for k, v in params.items()}, len(records))
        global_params, _, rejected = aggregate_round(strategy, global_params, results)
        if rejected:
            raise RuntimeError(f"round {r + 1}: results rejected: {rejected}")
        spent += sum(seconds) / len(seconds)
        trainer.set_params(global_params)
        score = float(trainer.evaluate(test)[key])
        rows.append({"round": r + 1, "score": score, "seconds": sum(seconds) / len(seconds),
                     "cumulative_seconds": spent, "upload_bytes_per_site": sum(upload) / len(upload)})
        print(f"  {args.method} round {r + 1}: {key} {score:.3f}, {rows[-1]['seconds']:.1f} s/site", flush=True)
    out = {
        "method": args.method, "scenario": args.scenario, "model": trainer.spec.model_name, "args": vars(args),
        "score_key": key, "initial_score": initial, "trainable_params": trainer.trainable_count(), "adapter_bytes": adapter_bytes,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "build_rss_mb": build_rss,
        "rss_after_build_mb": built_rss,
        "train_peak_rss_mb": _vm_hwm_mb() if reset else None,
        "seconds_per_round": sum(row["seconds"] for row in rows) / len(rows),
        "upload_bytes_per_round": rows[-1]["upload_bytes_per_site"], "rounds": rows,
    }
    if args.method == "forward_only":
        out["replay_exact"] = replay_exact
    if args.method == "qlora":
        from flaretune.models.qlora import base_storage

        out["base_storage"] = base_storage(trainer.model)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def spawn(argv, timeout: float = 3600.0) -> dict:
    """Run :func:`main` with ``argv`` (without ``--json``) in a fresh Python process; its JSON result."""
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "flaretune.bench.site_run", *map(str, argv), "--json", str(out)]
        print("$ " + " ".join(command[1:-2]), flush=True)
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        subprocess.run(command, check=True, timeout=timeout, env=env)
        return json.loads(out.read_text())


if __name__ == "__main__":
    sys.exit(main())
