"""Kill a client (SIGKILL, every process of the site) mid-round in a real POC network: the round completes
with the other sites at its deadline and the workflow finishes every round; the killed site is named as missing.

FLARE 2.9 itself then marks the job FINISHED:ABNORMAL: the restarted site has no process for the job, so it
cannot report the job's terminal outcome (``fed_server.py``: "terminal outcome unavailable ... missing job on
client"), and a restarted client is not given the running job again, so it does not rejoin before the job ends."""

import json
import time
from pathlib import Path

import pytest

from flaretune.poc import PocNetwork, submit_job, wait_job

CLINICAL_JOB = Path(__file__).resolve().parents[2] / "jobs" / "clinical_ner"

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _job(tmp_path) -> Path:
    from flaretune.jobcfg import JobFolder

    folder = JobFolder(CLINICAL_JOB)
    folder.set_rounds(2)
    folder.set_sites(3)
    folder.persistor_args.update({"model_name": "tiny-minilm-ner", "lora_r": 2})
    folder.workflow_args.update({"min_clients": 2, "train_timeout": 40, "min_clients_wait": 30})
    folder.executor_args.update({"max_steps": 2, "num_threads": 1, "synthetic_train_size": 16})
    return folder.write(tmp_path / "job")


def _wait_for_round(state: Path, round_number: int, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(state.read_text())["round"] >= round_number:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of round {round_number} at {state} after {timeout:.0f}s")


def test_a_killed_client_is_left_out_and_the_job_completes_with_the_others(tmp_path):
    network = PocNetwork(tmp_path / "poc", n_clients=3)
    try:
        network.prepare()
        network.start_each()
        job_id = submit_job(network, _job(tmp_path))
        _wait_for_round(network.prod_dir / "server" / job_id / "checkpoint" / "state.json", 0)
        killed = network.kill_site("site-3")  # round 2 of 2 has just been sent: site-3 dies with its task
        assert len(killed) >= 2, killed  # the client and its job process
        network.restart_site("site-3")
        status, result = wait_job(network, job_id, timeout=600)
    finally:
        network.stop()
    assert not network._workspace_pids(), "POC processes survived stop()"
    assert status == "FINISHED:ABNORMAL", status  # FLARE's verdict on the lost site-3 job (module docstring)
    server_log = (network.prod_dir / "server" / "log.txt").read_text()
    assert f"Failing job {job_id}: terminal outcome unavailable from site-3: missing job on client" in server_log

    (run_dir,) = [p.parent.parent for p in result.glob("**/global_model/history.json")]
    history = json.loads((run_dir / "global_model" / "history.json").read_text())
    assert [sorted(r["sites"]) for r in history["rounds"]] == [["site-1", "site-2", "site-3"], ["site-1", "site-2"]]
    assert [r["missing"] for r in history["rounds"]] == [[], ["site-3"]]
    assert "error" not in history
    assert sorted(history["final"]) == ["site-1", "site-2"]  # the final model was scored by the live sites
    assert (run_dir / "global_model" / "round-001.safetensors").is_file()
    assert (run_dir / "global_model" / "adapter" / "adapter_config.json").is_file()
    log = (run_dir / "log.txt").read_text()
    assert ("round 2/2: deadline of 40s passed; the round completes with 2 of 3 sites; no result from site-3"
            in log)
