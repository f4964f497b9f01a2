"""flaretune.simulate without FLARE: a stand-in simulator command shows how runs that hit FLARE 2.9's
duplicate-client race are stopped and run again."""

import sys
import time

from flaretune import simulate

FAKE = """
import pathlib, sys, time
ws = pathlib.Path(sys.argv[sys.argv.index("-w") + 1])
runs = ws.parent / "runs"
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
(ws / "server").mkdir(parents=True, exist_ok=True)
if n <= int(sys.argv[1]):  # this run races: the server log says so, and the run would hang
    (ws / "server" / "log.txt").write_text("sfm_endpoint - INFO - Connection CN1 is evicted for CN2 from "
                                           "endpoint site-1.simulate_job for exceeding limit 1\\n")
    time.sleep(60)
(ws / "server" / "log.txt").write_text("all good\\n")
print("round 1/1 done", flush=True)
"""


def _fake(monkeypatch, tmp_path, racing_runs: int):
    script = tmp_path / "fake_simulator.py"
    script.write_text(FAKE)
    monkeypatch.setattr(simulate, "nvflare_command", lambda: [sys.executable, str(script), str(racing_runs)])


def test_a_run_that_races_is_stopped_and_run_again(monkeypatch, tmp_path):
    _fake(monkeypatch, tmp_path, racing_runs=1)
    said = []
    started = time.monotonic()
    code, _, log = simulate.simulate("job", tmp_path / "ws", 2, echo=said.append, timeout=120)
    assert time.monotonic() - started < 30  # the racing run was stopped, not waited out
    assert code == 0 and (tmp_path / "runs").read_text() == "2"
    assert any("running again (1/2)" in s for s in said) and any("round 1/1 done" in s for s in said)
    assert "round 1/1 done" in log.read_text()


def test_gives_up_after_the_last_attempt(monkeypatch, tmp_path):
    _fake(monkeypatch, tmp_path, racing_runs=9)
    said = []
    code, _, _ = simulate.simulate("job", tmp_path / "ws", 2, echo=said.append, timeout=120, attempts=2)
    assert code != 0 and (tmp_path / "runs").read_text() == "2"
    assert any("giving up (2/2)" in s for s in said)


def test_the_time_limit_also_ends_a_child_that_keeps_the_output_open(monkeypatch, tmp_path):
    # like `nvflare simulator`, the command leaves the work to a child process that inherits its output
    script = tmp_path / "hangs.py"
    script.write_text("import subprocess, sys\n"
                      "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n")
    monkeypatch.setattr(simulate, "nvflare_command", lambda: [sys.executable, str(script)])
    started = time.monotonic()
    code, run_dir, log = simulate.simulate("job", tmp_path / "ws", 2, echo=lambda s: None, timeout=3)
    assert time.monotonic() - started < 30
    assert run_dir is None and "stopped after its 3 s time limit" in log.read_text()


DIES = """
import pathlib, sys, time
ws = pathlib.Path(sys.argv[sys.argv.index("-w") + 1])
runs = ws.parent / "runs"
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
if n == 1:  # a worker dies while it starts; the server would wait for that client for ever
    print("SimulatorRunner - ERROR - Communication error with client site-2: [Errno 104] Connection reset by peer",
          flush=True)
    time.sleep(60)
print("round 1/1 done", flush=True)
print("SimulatorRunner - ERROR - Communication error with client site-1: EOF", flush=True)  # after progress: kept
"""


def test_a_worker_that_dies_before_the_first_round_is_run_again_but_not_one_that_dies_later(monkeypatch, tmp_path):
    script = tmp_path / "dies.py"
    script.write_text(DIES)
    monkeypatch.setattr(simulate, "nvflare_command", lambda: [sys.executable, str(script)])
    said = []
    started = time.monotonic()
    code, _, log = simulate.simulate("job", tmp_path / "ws", 2, echo=said.append, timeout=120)
    assert time.monotonic() - started < 30
    assert code == 0 and (tmp_path / "runs").read_text() == "2"
    assert ("  a simulator worker died before the first round (Communication error with client site-2); "
            "running again (1/2)") in said
    assert log.read_text().count("round 1/1 done") == 1
