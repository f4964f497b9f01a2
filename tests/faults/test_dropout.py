"""Dropout and stragglers in the simulator: a site that stalls past a round's deadline (k-of-n, then it
rejoins from the current global model), and too few sites left (the job stops with one message)."""

from pathlib import Path

import pytest

from .conftest import fault_job, faultsim, history_of, records, simulate_faults

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _job(out, rounds: int, stall: dict, stall_seconds: float, record_dir: Path, **workflow_args) -> Path:
    return fault_job(out, rounds, "StallingExecutor", workflow_args, synthetic_train_size=16, stall=stall,
                     stall_seconds=stall_seconds, record_dir=str(record_dir))


def test_a_straggler_is_left_out_of_its_round_and_rejoins_from_the_current_global_model(tmp_path):
    from safetensors.numpy import load_file

    params_sha256 = faultsim().params_sha256
    received = tmp_path / "received"
    received.mkdir()
    # site-3 sleeps 40 s in round 2 of 3; the deadline is 30 s (round 1, with set-up, took 10-14 s here under
    # load); 2 of 3 results suffice
    job = _job(tmp_path / "job", 3, {"site-3": [1]}, 40, received, min_clients=2, train_timeout=30)
    returncode, run_dir, log, _ = simulate_faults(job, tmp_path, timeout=300)

    assert returncode == 0, log[-3000:]
    history = history_of(run_dir)
    assert [sorted(r["sites"]) for r in history["rounds"]] == [
        ["site-1", "site-2", "site-3"], ["site-1", "site-2"], ["site-1", "site-2", "site-3"]]
    assert [r["missing"] for r in history["rounds"]] == [[], ["site-3"], []]
    assert "error" not in history
    assert log.count("round 2/3: deadline of 30s passed; the round completes with 2 of 3 sites; no result from "
                     "site-3 (a late result is dropped; the site trains again next round)") == 1
    # what each site trained from: round r's task carried the global model published after round r-1
    globals_ = [params_sha256(load_file(str(run_dir / "global_model" / f"round-{r:03d}.safetensors")))
                for r in range(3)]
    site3 = records(received, "site-3")
    assert [(r["round"], r["stalled"]) for r in site3] == [(0, False), (1, True), (2, False)]
    assert site3[1]["sha256"] == globals_[0]
    assert site3[2]["sha256"] == globals_[1]  # rejoined from the model it had no part in, not a stale one
    assert records(received, "site-1")[2]["sha256"] == globals_[1]
    assert sorted(history["final"]) == ["site-1", "site-2", "site-3"]


def test_too_few_sites_stop_the_job_with_one_message_naming_them(tmp_path):
    received = tmp_path / "received"
    received.mkdir()
    # site-2 and site-3 go silent in round 2 (for far longer than the test): 1 result, 2 needed
    job = _job(tmp_path / "job", 2, {"site-2": [1], "site-3": [1]}, 600, received,
               min_clients=2, train_timeout=30, min_clients_wait=5)
    _, run_dir, log, elapsed = simulate_faults(job, tmp_path, timeout=300)

    silent = "no answer within the 30s deadline and 5s wait"
    message = f"round 2/2: 1 result(s) accepted, 2 needed (min_clients); site-2: {silent}; site-3: {silent}"
    history = history_of(run_dir)
    assert history["error"] == message
    assert [sorted(r["sites"]) for r in history["rounds"]] == [["site-1", "site-2", "site-3"]]
    assert "round 2/2: 1 result(s), 2 needed (min_clients); waiting up to 5s for site-2, site-3" in log
    assert message in log
    assert "round 2/2 done" not in log and "final global model" not in log
    assert elapsed < 240  # it stopped; the silent sites' 600 s sleep was cut by the job's abort
