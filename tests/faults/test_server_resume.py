"""Kill the FLARE server (SIGKILL) mid-job in a real POC network, start it again, resume from the checkpoint."""

import json
import time
from pathlib import Path

import pytest

from flaretune.poc import PocNetwork, submit_job, wait_job

CLINICAL_JOB = Path(__file__).resolve().parents[2] / "jobs" / "clinical_ner"

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _job(tmp_path, name: str, resume_from: str = "") -> Path:
    from flaretune.jobcfg import JobFolder

    folder = JobFolder(CLINICAL_JOB)
    folder.set_rounds(4)
    folder.set_sites(2)
    folder.persistor_args.update({"model_name": "tiny-minilm-ner", "lora_r": 2})
    folder.workflow_args.update({"aggregator": "fedadam", "server_lr": 0.01, "resume_from": resume_from})
    folder.executor_args.update({"max_steps": 6, "num_threads": 1, "synthetic_train_size": 24})
    folder.set_quantization("none", ["train", "validate", "submit_model"])
    return folder.write(tmp_path / name)


def _wait_for_checkpoint(state: Path, round_number: int, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            saved = json.loads(state.read_text())
            if saved["round"] >= round_number:
                return saved
        except (OSError, ValueError, KeyError):
            pass  # not written yet (it is renamed into place whole, so never half-read)
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of round {round_number} at {state} after {timeout:.0f}s")


def test_a_killed_server_resumes_from_the_last_completed_round(tmp_path):
    from flaretune.aggregation.checkpoint import Checkpoint
    from flaretune.aggregation.rounds import MemoryStore, state_digest

    network = PocNetwork(tmp_path / "poc", n_clients=2)
    try:
        network.prepare()
        network.start_each()
        first = submit_job(network, _job(tmp_path, "job"))
        server_ws = network.prod_dir / "server"
        checkpoint = server_ws / first / "checkpoint"
        _wait_for_checkpoint(checkpoint / "state.json", 1)  # rounds 0 and 1 of 4 are complete
        killed = network.kill_site("server")
        assert len(killed) >= 2, killed  # the server and its job process
        saved = Checkpoint(checkpoint).load(MemoryStore())  # what the killed server left: its last complete round
        assert saved["round"] in (1, 2)  # round 2 may have completed between the poll and the kill

        network.restart_site("server")
        network._wait_ready(300)
        second = submit_job(network, _job(tmp_path, "resumed", resume_from=f"{first}/checkpoint"))
        status, result = wait_job(network, second, timeout=900)
    finally:
        network.stop()
    assert status == "FINISHED:COMPLETED", status
    assert not network._workspace_pids(), "POC processes survived stop()"

    (history_file,) = result.glob("**/global_model/history.json")
    history = json.loads(history_file.read_text())
    assert [r["round"] for r in history["rounds"]] == [0, 1, 2, 3]  # 4 rounds in total, none repeated
    assert history["rounds"][: saved["round"] + 1] == saved["history"]["rounds"]  # the first run's, as saved
    (resumed,) = history["resumed"]
    assert resumed["after_round"] == saved["round"]
    assert resumed["strategy_step"] == saved["round"] + 1  # FedAdam's moments went on from where they were
    assert resumed["strategy_sha256"] == state_digest(saved["strategy"])  # restored state == saved state
    assert all(sorted(r["sites"]) == ["site-1", "site-2"] for r in history["rounds"])
    assert sorted(history["final"]) == ["site-1", "site-2"]
