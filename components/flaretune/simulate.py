"""Run a job folder in the FLARE simulator as a child process, with progress on the console.

The simulator's own log goes to a file; lines our components log about rounds are echoed, so a
person sees the federation advance without FLARE's verbose output.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from flaretune.errors import FlaretuneError

_PROGRESS = re.compile(r"(round \d+/\d+ done.*|final global model on .*|\S+ round \d+: \d+ steps.*)")


def venv_env(extra: Optional[dict] = None) -> dict:
    """The environment for FLARE child processes: this interpreter's ``bin`` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def nvflare_command() -> List[str]:
    candidate = Path(sys.executable).parent / "nvflare"
    return [str(candidate)] if candidate.exists() else [sys.executable, "-m", "nvflare.cli"]


# FLARE 2.9's simulator hands each worker process its client name through one build context that its threads
# share (simulator_runner.py: ``self.build_ctx["client_name"] = ...`` then ``conn.send``), so two workers can
# start as the same client. The server then evicts one connection after the other and the run fails or hangs.
DUPLICATE_CLIENT = "for exceeding limit 1"
# A worker process that dies while it starts (seen once under heavy load: "Communication error with client
# site-2: [Errno 104] Connection reset by peer") leaves the server waiting for that client for ever.
_WORKER_DIED = re.compile(r"(Subprocess died for client [^\s:,]+|Communication error with client [^\s:,]+)")


def simulate(
    job_dir,
    workspace,
    n_clients: int,
    threads: Optional[int] = None,
    log_file=None,
    env: Optional[dict] = None,
    echo: Callable[[str], None] = print,
    timeout: Optional[float] = None,
    attempts: int = 2,
) -> Tuple[int, Optional[Path], Path]:
    """Run ``nvflare simulator JOB -w WS -n N -t T``; return ``(exit code, server run folder or None, log)``.

    A run that hit the simulator's duplicate-client race (see ``DUPLICATE_CLIENT``), or whose worker died
    before any round made progress, is stopped and run again, up to ``attempts`` runs in all; the log file
    keeps every attempt.
    """
    from flaretune.provisioning.policy import allow_in_workspace

    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    allow_in_workspace(workspace)  # the simulator keeps WS/local across its clean-up
    # the simulator clears its workspace at start: keep the log beside it
    log_path = Path(log_file) if log_file else workspace.with_name(workspace.name + ".log")
    cmd = nvflare_command() + [
        "simulator", str(job_dir), "-w", str(workspace), "-n", str(n_clients), "-t", str(threads or n_clients),
    ]
    log_path.write_text("")
    for attempt in range(1, attempts + 1):
        server_log = workspace / "server" / "log.txt"
        server_log.unlink(missing_ok=True)  # the simulator clears the workspace itself, but only once it starts
        returncode, failed_start = _simulate_once(cmd, log_path, server_log, env, echo, timeout)
        if not failed_start:
            break
        echo(f"  {failed_start}; {'running again' if attempt < attempts else 'giving up'} ({attempt}/{attempts})")
    return returncode, find_server_run_dir(workspace), log_path


def _simulate_once(cmd: List[str], log_path: Path, server_log: Path, env, echo, timeout) -> Tuple[int, str]:
    """One simulator run: ``(exit code, why it failed to start or "")``. Stops it at ``timeout`` seconds, or
    as soon as the server log shows the duplicate-client race or a worker dies before any progress."""
    started, raced, finished = time.time(), threading.Event(), threading.Event()
    failed_start, progressed = "", False
    with open(log_path, "a") as log:
        # its own process group: `nvflare simulator` runs the simulation in a child process, which must end
        # with it (and which would otherwise keep the output pipe open)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=venv_env(env),
                                start_new_session=True)

        def stop():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

        def watch():  # the eviction is logged by the server's connection layer, in its log file only
            seen, tail = 0, ""
            while not finished.is_set():  # not proc.poll(): the simulator's child may outlive it
                if timeout is not None and time.time() - started > timeout:
                    log.write(f"flaretune: simulator stopped after its {timeout:.0f} s time limit\n")
                    stop()
                    return
                if server_log.is_file():
                    with open(server_log, errors="replace") as f:
                        f.seek(seen)
                        new = f.read()
                        seen = f.tell()
                    if DUPLICATE_CLIENT in tail + new:
                        raced.set()
                        stop()
                        return
                    tail = new[-len(DUPLICATE_CLIENT):]
                finished.wait(1.0)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            for line in proc.stdout:
                log.write(line)
                match = _PROGRESS.search(line)
                if match:
                    progressed = True
                    echo(f"  [{time.time() - started:6.1f}s] {match.group(1).strip()}")
                died = None if progressed or failed_start else _WORKER_DIED.search(line)
                if died:
                    failed_start = f"a simulator worker died before the first round ({died.group(1)})"
                    stop()
            proc.wait()
        finally:
            finished.set()
            stop()  # the simulator's own child too, after a timeout or an interrupt
            proc.wait()
            watcher.join()
    if raced.is_set():
        failed_start = "FLARE's simulator started two workers as the same client (nvflare 2.9 race)"
    return proc.returncode, failed_start


def run_simulator(
    job_dir,
    workspace,
    n_clients: int,
    threads: Optional[int] = None,
    log_file=None,
    env: Optional[dict] = None,
    echo: Callable[[str], None] = print,
    timeout: Optional[float] = None,
) -> Path:
    """Run ``nvflare simulator JOB -w WS -n N -t T`` (see :func:`simulate`); return the server's run folder.

    Raises FlaretuneError with the log's tail when the simulator fails.
    """
    returncode, run_dir, log_path = simulate(job_dir, workspace, n_clients, threads, log_file, env, echo, timeout)
    if returncode != 0 or run_dir is None or _log_has_failure(log_path):
        tail = "".join(Path(log_path).read_text(errors="replace").splitlines(True)[-25:])
        raise FlaretuneError(f"simulator run of {job_dir} failed (exit {returncode}); log {log_path}:\n{tail}")
    return run_dir


def find_server_run_dir(workspace) -> Optional[Path]:
    """The server's run folder (holds ``global_model/``) in a simulator workspace."""
    hits = sorted(Path(workspace).glob("**/global_model/history.json"))
    return hits[0].parent.parent if hits else None


def _log_has_failure(log_path) -> bool:
    text = Path(log_path).read_text(errors="replace")
    return "FATAL_SYSTEM_ERROR" in text or "Traceback (most recent call last)" in text and "panic" in text.lower()
