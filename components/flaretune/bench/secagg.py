"""``flaretune bench secagg``: secure aggregation vs plain FedAvg, bytes and wall time per round, same run.

Two FLARE simulator runs of ``jobs/clinical_ner`` on the same synthetic hospitals (3 by default): the
shipped job (FedAvg, the job's own float16 result quantization) and the same job after
:func:`flaretune.aggregation.secagg.enable_secure_aggregation`. Per round and client:

* ``upload_bytes``: tensor payload a site sends (plain: after its quantization; secure: the masked
  integers) plus, for secure aggregation, the protocol messages it sends (keys, sealed shares, revealed
  shares); FLARE's framing is excluded in both;
* ``protocol s``: the round's advertise, share and unmask broadcasts (the secure job's own timing), the
  part of its round that plain FedAvg does not have — steadier than the difference of two runs' times;
* ``seconds``: the round's wall time in the server's ``history.json`` (broadcast to aggregate); both jobs
  run with the task poll interval secure aggregation sets (0.5 s), so the times differ by the protocol.

It also checks that both runs start from the same global model and reports the relative L2 distance of
their round-0 aggregates: local training is seeded, so the two differ only by float16 vs fixed point.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Dict, List

_JOB = Path(__file__).resolve().parents[3] / "jobs" / "clinical_ner"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-minilm-ner", help="tiny-minilm-ner (default) or minilm-ner")
    parser.add_argument("--sites", type=int, default=3, help="number of sites (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per run (default 2)")
    parser.add_argument("--max-steps", type=int, default=5, help="local steps per round (default 5)")
    parser.add_argument("--modulus-bits", type=int, default=64, choices=(24, 32, 64), help="secure aggregation's k")
    parser.add_argument("--fraction-bits", type=int, default=32, help="secure aggregation's f (default 32)")
    parser.add_argument("--json", default="", help="write the rows here")
    parser.add_argument("--workdir", default="", help="where the jobs and workspaces go (default: a temp folder)")


def _plain_upload_bytes(model: Dict, qtype: str) -> int:
    """Tensor bytes of one upload of ``model``'s tensors after the job's QuantizeFilter (FLARE framing excluded)."""
    from flaretune.ops.quant import is_quantizable, payload_nbytes, quantize

    data = {}
    for name, value in model.items():
        data[name] = quantize(value, qtype, None)[0] if qtype and is_quantizable(value, qtype) else value
    return payload_nbytes(data)


def _run(job: Path, ws: Path, n_sites: int) -> tuple:
    from flaretune.simulate import run_simulator

    started = time.time()
    run_dir = run_simulator(job, ws, n_sites, log_file=ws.with_name(ws.name + ".log"), echo=lambda line: None)
    return run_dir, json.loads((run_dir / "global_model" / "history.json").read_text()), time.time() - started


def run(args) -> int:
    import numpy as np
    from safetensors.numpy import load_file

    from flaretune.aggregation.secagg import TASK_REQUEST_INTERVAL, enable_secure_aggregation
    from flaretune.data.clinical import make_clinical_dataset
    from flaretune.jobcfg import JobFolder

    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-secagg-"))
    make_clinical_dataset(root / "data", n_sites=args.sites, seed=1, skew=0.8, n_train=48, n_test=12)
    jobs = {}
    for name in ("plain", "secagg"):
        folder = JobFolder(_JOB)
        folder.set_rounds(args.rounds)
        folder.set_sites(args.sites)
        folder.persistor_args["model_name"] = args.model
        folder.executor_args.update(data_path=str(root / "data" / "{site_name}"), max_steps=args.max_steps,
                                    num_threads=1)
        folder.workflow_args["final_validation"] = False
        qtype = folder.quantization()
        if name == "secagg":
            enable_secure_aggregation(folder, ["train"], modulus_bits=args.modulus_bits,
                                      fraction_bits=args.fraction_bits)
        else:  # the same task poll interval as the secure job, so the times differ by the protocol only
            folder.server.setdefault("server", {})["task_request_interval"] = TASK_REQUEST_INTERVAL
        jobs[name] = folder.write(root / f"job-{name}")
    results = {name: _run(job, root / f"ws-{name}", args.sites) for name, job in jobs.items()}

    rows: List[dict] = []
    plain_dir, plain_history, plain_wall = results["plain"]
    secure_dir, secure_history, secure_wall = results["secagg"]
    for plain, secure in zip(plain_history["rounds"], secure_history["rounds"]):
        r = plain["round"]
        model = load_file(str(plain_dir / "global_model" / f"round-{r:03d}.safetensors"))
        plain_bytes = _plain_upload_bytes(model, qtype)
        fp32_bytes = sum(v.nbytes for v in model.values())
        info = secure["secure_aggregation"]
        for site, record in sorted(secure["sites"].items()):
            up = record["upload_param_bytes"] + info["protocol_bytes_up"].get(site, 0)
            rows.append({"round": r, "site": site, "plain_upload_bytes": plain_bytes, "fp32_bytes": fp32_bytes,
                         "secagg_masked_bytes": record["upload_param_bytes"],
                         "secagg_protocol_bytes_up": info["protocol_bytes_up"].get(site, 0),
                         "secagg_upload_bytes": up, "bytes_ratio": up / plain_bytes,
                         "secagg_protocol_bytes_down": info["protocol_bytes_down_per_site"],
                         "plain_seconds": plain["seconds"], "secagg_seconds": secure["seconds"],
                         "secagg_step_seconds": info["step_seconds"],
                         "secagg_protocol_seconds": round(sum(v for k, v in info["step_seconds"].items()
                                                              if k != "train"), 3),
                         "seconds_ratio": secure["seconds"] / plain["seconds"] if plain["seconds"] else None})
    a = load_file(str(plain_dir / "global_model" / "round-000.safetensors"))
    b = load_file(str(secure_dir / "global_model" / "round-000.safetensors"))
    distance = float(np.sqrt(sum(((a[k].astype(np.float64) - b[k]) ** 2).sum() for k in a)) /
                     np.sqrt(sum((a[k].astype(np.float64) ** 2).sum() for k in a)))
    summary = {"model": args.model, "sites": args.sites, "rounds": args.rounds, "quantization": qtype,
               "modulus_bits": args.modulus_bits, "fraction_bits": args.fraction_bits,
               "round0_relative_l2_plain_vs_secagg": distance, "plain_wall_s": round(plain_wall, 1),
               "secagg_wall_s": round(secure_wall, 1), "rows": rows}

    print(f"secure aggregation vs plain FedAvg ({qtype} results), {args.model}, {args.sites} sites, "
          f"{args.modulus_bits}-bit fixed point")
    print(f"{'round':>5} {'site':<8} {'plain B':>10} {'secagg B':>10} {'(masked':>10} {'+proto)':>8} {'x':>6} "
          f"{'plain s':>8} {'secagg s':>9} {'x':>6} {'protocol s':>10}")
    for row in rows:
        print(f"{row['round']:>5} {row['site']:<8} {row['plain_upload_bytes']:>10,} {row['secagg_upload_bytes']:>10,} "
              f"{row['secagg_masked_bytes']:>10,} {row['secagg_protocol_bytes_up']:>8,} {row['bytes_ratio']:>6.2f} "
              f"{row['plain_seconds']:>8.1f} {row['secagg_seconds']:>9.1f} {row['seconds_ratio'] or 0:>6.2f} "
              f"{row['secagg_protocol_seconds']:>10.2f}")
    print(f"round-0 aggregate, relative L2 distance plain vs secure: {distance:.2e}; "
          f"wall time of the runs {plain_wall:.0f}s vs {secure_wall:.0f}s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0
