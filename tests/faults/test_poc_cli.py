"""``flaretune poc start|status|stop`` as a user runs them: the network outlives ``start``, runs the job it was
given, and ``stop`` leaves no process behind."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.faults]

REPO = Path(__file__).resolve().parents[2]


def _flaretune(*args, timeout=400):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run([str(Path(sys.executable).parent / "flaretune"), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_poc_start_runs_a_job_and_stop_leaves_nothing_running(tmp_path):
    from flaretune.jobcfg import JobFolder
    from flaretune.poc import PocNetwork, wait_job

    folder = JobFolder(REPO / "jobs" / "clinical_ner")
    folder.set_rounds(1)
    folder.set_sites(2)
    folder.persistor_args.update({"model_name": "tiny-minilm-ner", "lora_r": 2})
    folder.executor_args.update({"max_steps": 2, "num_threads": 1, "synthetic_train_size": 16})
    job = folder.write(tmp_path / "job")
    ws = tmp_path / "ws"
    network = PocNetwork(ws, n_clients=2)  # the test's view of the same folder, to wait for the job and clean up
    try:
        started = _flaretune("poc", "start", "--sites", 2, "--job", job, "--workspace", ws)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        lines = started.stdout.splitlines()
        assert lines[0].startswith("preparing a POC network (server + 2 sites, 127.0.0.1:") and str(ws) in lines[0]
        job_id = lines[2].split(" as job ")[1]
        assert lines[2] == f"submitted {job} as job {job_id}"
        assert lines[3].startswith(f"admin startup kit: {network.prod_dir / 'admin@nvidia.com'}")
        status, _ = wait_job(network, job_id, timeout=300)  # the network outlived `poc start`
        assert status == "FINISHED:COMPLETED"

        report = _flaretune("poc", "status", "--workspace", ws)
        assert report.returncode == 0, report.stdout + report.stderr
        rows = report.stdout.splitlines()
        assert [row.split(":")[0] for row in rows[:3]] == ["server", "site-1", "site-2"]
        assert all(": running (pid " in row for row in rows[:3])
        assert rows[3] == f"job {job_id}: FINISHED:COMPLETED"

        stopped = _flaretune("poc", "stop", "--workspace", ws)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert stopped.stdout.strip().endswith(f"nothing runs under {ws}")
        assert network._workspace_pids() == []
        after = _flaretune("poc", "status", "--workspace", ws)
        assert (after.returncode, after.stdout) == (1, f"no POC network started by flaretune in {ws}\n")
    finally:
        network.stop()


def test_poc_start_refuses_a_job_that_needs_more_sites_before_starting_anything(tmp_path):
    result = _flaretune("poc", "start", "--sites", 2, "--job", REPO / "jobs" / "clinical_ner", "--workspace",
                        tmp_path / "ws", timeout=60)
    assert result.returncode == 2
    assert result.stderr == (f"flaretune: {REPO / 'jobs' / 'clinical_ner' / 'meta.json'}: min_clients 3 needs "
                             "--sites 3 or more, got --sites 2\n")
    assert not (tmp_path / "ws").exists()


def test_poc_start_stopped_by_sigterm_while_it_waits_for_the_sites_leaves_nothing_running(tmp_path):
    import signal
    import time

    from flaretune.poc import PocNetwork

    ws = tmp_path / "ws"
    network = PocNetwork(ws, n_clients=2)
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.Popen([str(Path(sys.executable).parent / "flaretune"), "poc", "start", "--sites", "2",
                             "--workspace", str(ws)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(network._workspace_pids()) < 3 and time.monotonic() < deadline:  # server and sites started
            time.sleep(0.2)
        assert len(network._workspace_pids()) >= 3
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
        assert stderr.splitlines()[-1] == "flaretune: stopped by SIGTERM; the FLARE processes it started are ended"
        assert network._workspace_pids() == []
        assert not (ws / "flaretune-poc.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        network.stop()
