"""What the simulator fault tests share: a clinical_ner job on the tiny model whose sites run a test-only
executor from ``sites/faultsim.py`` (or a ``model_push`` whose server runs ``sites/faultstream.py``'s corrupting
controller), and one simulator run of it with those modules allowed and importable."""

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SITES_DIR = Path(__file__).resolve().parent / "sites"  # the test-only executors' module


def fault_job(out, rounds: int, executor: str = "", workflow_args=None, **executor_args) -> Path:
    """``jobs/clinical_ner`` with the tiny model (LoRA r 2), ``rounds`` rounds, 2 local steps, no quantization
    (sites receive and send their tensors bit for bit), ``executor`` (a class in faultsim) at every site."""
    from flaretune.jobcfg import JobFolder

    folder = JobFolder(REPO / "jobs" / "clinical_ner")
    folder.set_rounds(rounds)
    folder.persistor_args.update({"model_name": "tiny-minilm-ner", "lora_r": 2})
    folder.workflow_args.update(workflow_args or {})
    folder.set_quantization("none", ["train", "validate", "submit_model"])
    spec = folder.executor()
    if executor:
        spec["path"] = f"faultsim.{executor}"
    spec["args"].update({"max_steps": 2, "num_threads": 1, **executor_args})
    return folder.write(out)


def simulate_faults(job: Path, tmp_path: Path, timeout: float, n_sites: int = 3):
    """Run ``job`` in the simulator with ``n_sites`` sites: ``(exit code, server run folder, log text, seconds)``."""
    from flaretune.provisioning.policy import ALLOW_PREFIX, allow_in_workspace
    from flaretune.simulate import simulate

    allow_in_workspace(tmp_path / "ws", prefixes=(ALLOW_PREFIX, "faultsim.", "faultstream."))
    pythonpath = os.pathsep.join(filter(None, [str(SITES_DIR), os.environ.get("PYTHONPATH")]))
    started = time.monotonic()
    returncode, run_dir, log = simulate(job, tmp_path / "ws", n_sites, log_file=tmp_path / "sim.log",
                                        env={"PYTHONPATH": pythonpath}, echo=lambda line: None, timeout=timeout)
    return returncode, run_dir, log.read_text(errors="replace"), time.monotonic() - started


def history_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "global_model" / "history.json").read_text())


def records(record_dir: Path, site: str) -> list:
    """The lines a faultsim executor wrote to ``record_dir/<site>.jsonl``, one per train task."""
    return [json.loads(line) for line in (record_dir / f"{site}.jsonl").read_text().splitlines()]


def faultsim():
    """The test-only executors' module, imported here as the simulator's workers import it."""
    sys.path.insert(0, str(SITES_DIR))
    try:
        import faultsim as module
    finally:
        sys.path.remove(str(SITES_DIR))
    return module
