"""A ``flaretune`` command stopped by SIGTERM (a scheduler's time limit) ends every FLARE process it started."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _pids_naming(folder: Path) -> list:
    """Live (not zombie) processes whose command line names ``folder``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(folder) in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _sigterm_once_running(args, ready_line: str, folder: Path, settle: float = 0.0):
    """Start ``flaretune ARGS``; once it prints ``ready_line`` and at least 3 processes name ``folder``, send
    it SIGTERM (to flaretune alone: its FLARE processes run in sessions of their own). Returns
    ``(exit code, stdout lines, stderr, the pids seen before the signal)``."""
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.Popen([str(Path(sys.executable).parent / "flaretune"), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    lines, ready = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if ready_line in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not ready.wait(1) and proc.poll() is None and time.monotonic() < deadline:
            pass
        early_exit = proc.stderr.read()[-2000:] if proc.poll() is not None else ""
        assert ready.is_set(), "".join(lines)[-2000:] + early_exit
        time.sleep(settle)
        deadline, started = time.monotonic() + 120, []
        while time.monotonic() < deadline and len(started) < 3:  # e.g. the server and two sites, at least
            time.sleep(1)
            started = _pids_naming(folder)
        assert len(started) >= 3, (started, "".join(lines)[-2000:])
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=150)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    return proc.returncode, lines, stderr, started


def _assert_ended(code: int, stderr: str, started: list, folder: Path) -> None:
    assert code == 128 + signal.SIGTERM, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (
        "flaretune: stopped by SIGTERM; the FLARE processes it started are ended")
    assert [pid for pid in started if _alive(pid)] == []
    assert _pids_naming(folder) == []


def test_sigterm_to_bench_stream_leaves_no_flare_process_running(tmp_path):
    # the job is being submitted after "POC up": server, both sites and their job processes are starting
    code, _, stderr, started = _sigterm_once_running(
        ["bench", "stream", "--size-gb", "0.01", "--skip-baseline", "--chunk-mb", "4", "--workdir", str(tmp_path),
         "--timeout", "300"], "POC up:", tmp_path, settle=3)
    _assert_ended(code, stderr, started, tmp_path)
    assert not list(tmp_path.glob("ft_bench_stream_*"))  # its POC workspace is removed, as after a normal run


def test_sigterm_to_compare_mid_federation_leaves_no_simulator_process_running(tmp_path):
    """``flaretune compare`` killed by a scheduler's time limit while its simulator trains the federation."""
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "out"
    code, lines, stderr, started = _sigterm_once_running(
        ["compare", str(repo / "jobs" / "clinical_ner"), "--out", str(out), "--rounds", "50",
         "--model", "tiny-minilm-ner"], " federated: ", out)
    _assert_ended(code, stderr, started, out)
    assert not any("round 50/50" in line for line in lines)  # it was stopped mid-federation
