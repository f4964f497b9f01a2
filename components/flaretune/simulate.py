"""Run a job folder in the FLARE simulator as a child process, with progress on the console.

The simulator's own log goes to a file; lines our components log about rounds are echoed, so a
person sees the federation advance without FLARE's verbose output.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

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
    """Run ``nvflare simulator JOB -w WS -n N -t T``; return the server's run folder.

    Raises FlaretuneError with the log's tail when the simulator fails.
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
    started = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=venv_env(env))
        try:
            for line in proc.stdout:
                log.write(line)
                match = _PROGRESS.search(line)
                if match:
                    echo(f"  [{time.time() - started:6.1f}s] {match.group(1).strip()}")
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    run_dir = find_server_run_dir(workspace)
    failed = proc.returncode != 0 or run_dir is None or _log_has_failure(log_path)
    if failed:
        tail = "".join(Path(log_path).read_text(errors="replace").splitlines(True)[-25:])
        raise FlaretuneError(f"simulator run of {job_dir} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    return run_dir


def find_server_run_dir(workspace) -> Optional[Path]:
    """The server's run folder (holds ``global_model/``) in a simulator workspace."""
    hits = sorted(Path(workspace).glob("**/global_model/history.json"))
    return hits[0].parent.parent if hits else None


def _log_has_failure(log_path) -> bool:
    text = Path(log_path).read_text(errors="replace")
    return "FATAL_SYSTEM_ERROR" in text or "Traceback (most recent call last)" in text and "panic" in text.lower()
