"""FLARE networks on this machine, for tests and benchmarks: a POC on loopback, or any startup kits.

Everything lives under one root folder: ``HOME`` (so nothing is written to the real home), the POC
workspace and the logs. The server listens on 127.0.0.1 only, on a free port. :meth:`PocNetwork.stop`
ends every process that names the workspace, also after a failure.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from flaretune.errors import FlaretuneError
from flaretune.provisioning.policy import allow_in_local_dir
from flaretune.simulate import nvflare_command, venv_env

ADMIN = "admin@nvidia.com"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KitNetwork:
    """Startup kits in one folder (``prod_dir``) run on this machine; ``HOME`` and logs under ``root``.

    Each site starts as its own process tree (:meth:`start_each`); :meth:`stop` ends every process whose
    command line names ``workspace``. The admin kit's folder name is the admin's user name.
    """

    def __init__(self, root, prod_dir=None, server: str = "server", clients=(), admin: str = ADMIN,
                 extra_env: Optional[dict] = None):
        self.root = Path(root).resolve()
        self._prod_dir = Path(prod_dir).resolve() if prod_dir else None
        self.server = server
        self.clients = list(clients)
        self.admin = admin
        self.extra_env = extra_env or {}
        self.workspace = self._prod_dir or self.root
        self._group: Optional[int] = None
        self.procs: Dict[str, subprocess.Popen] = {}  # start_each(): one process tree per site
        self._logs = []

    @property
    def env(self) -> dict:
        home = self.root / "home"
        home.mkdir(parents=True, exist_ok=True)
        return venv_env({"HOME": str(home), **self.extra_env})

    @property
    def prod_dir(self) -> Path:
        return self._prod_dir

    @property
    def admin_kit(self) -> Path:
        return self.prod_dir / self.admin

    def sites(self):
        return list(self.clients)

    def start_each(self, timeout: float = 300) -> Dict[str, int]:
        """Start the server and every client as its own process tree (``sub_start.sh --once``), so a caller
        can watch each site's processes (see :meth:`roots`); wait for every client like :meth:`start`."""
        for site in [self.server] + self.sites():
            self.restart_site(site)
            if site == self.server:
                time.sleep(3)  # clients retry, but a server that is already listening saves a round of backoff
        self._wait_ready(timeout)
        return self.roots()

    def kill_site(self, site: str) -> List[int]:
        """SIGKILL every process of one site (its ``sub_start.sh`` tree and its job processes); the pids killed.

        For fault-injection tests: nothing is stopped politely, as when a machine loses power."""
        marker = str(self.prod_dir / site)
        pids = [pid for pid in self._workspace_pids() if _names_folder(pid, marker)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)  # frozen first, so sub_start.sh cannot restart what dies
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if site in self.procs:
            self.procs[site].wait(timeout=30)
        return pids

    def restart_site(self, site: str) -> int:
        """Start a site killed by :meth:`kill_site` again, as :meth:`start_each` did; its new root pid."""
        kit = self.prod_dir / site
        log = open(self.root / f"{site}.out", "ab")
        self._logs.append(log)
        self.procs[site] = subprocess.Popen(["bash", str(kit / "startup" / "sub_start.sh"), "--once"], cwd=kit,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        return self.procs[site].pid

    def roots(self) -> Dict[str, int]:
        """Root pid of each site started by :meth:`start_each`."""
        return {site: proc.pid for site, proc in self.procs.items()}

    def _wait_ready(self, timeout: float) -> None:
        _admin_call(["wait-ready", str(self.admin_kit), str(len(self.sites())), str(timeout)], self.env, timeout + 60)

    def _stop_politely(self) -> None:
        """Kits have no stop command that needs no admin: nothing to do before the kills."""

    def stop(self) -> None:
        """Stop politely, then end whatever is left in the process group and under the workspace."""
        self._stop_politely()
        for group in [self._group] + [proc.pid for proc in self.procs.values()]:
            try:
                if group:
                    os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for log in self._logs:
            log.close()
        self._logs.clear()
        # sub_start.sh restarts a process that dies without its shutdown file: freeze them all before killing,
        # and look again until nothing is left, so no restart can slip in between
        deadline = time.monotonic() + 30
        while True:
            pids = self._workspace_pids()
            if not pids or time.monotonic() > deadline:
                break
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
            time.sleep(0.5)

    def _workspace_pids(self):
        """Processes whose command line names the workspace (they may have left the process group)."""
        marker = str(self.workspace)
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                pids.append(int(entry.name))
        return pids

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class PocNetwork(KitNetwork):
    """``nvflare poc prepare -n N`` in ``root/poc``, on 127.0.0.1 and a free port, started with ``poc start``
    (:meth:`start`) or site by site (:meth:`start_each`)."""

    def __init__(self, root, n_clients: int = 3, extra_env: Optional[dict] = None):
        super().__init__(root, extra_env=extra_env)
        self.n_clients = n_clients
        self.port = free_port()
        self.workspace = self.root / "poc"

    @property
    def env(self) -> dict:
        return {**super().env, "NVFLARE_POC_WORKSPACE": str(self.workspace)}

    @property
    def prod_dir(self) -> Path:
        hits = sorted(self.workspace.glob("*/prod_*"))
        if not hits:
            raise FlaretuneError(f"no POC kits under {self.workspace}: was prepare() run?")
        return hits[-1]

    def sites(self):
        return [f"site-{i}" for i in range(1, self.n_clients + 1)]

    def _stop_politely(self) -> None:
        try:
            subprocess.run(nvflare_command() + ["poc", "stop"], env=self.env, capture_output=True, timeout=60,
                           stdin=subprocess.DEVNULL, cwd=self.root)
        except (subprocess.TimeoutExpired, OSError):
            pass
        time.sleep(2)

    def _nvflare(self, *args, timeout: float = 180) -> str:
        proc = subprocess.run(nvflare_command() + list(args), env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.root)
        if proc.returncode != 0:
            raise FlaretuneError(f"nvflare {' '.join(args)} failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return proc.stdout

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._nvflare("poc", "prepare", "-n", str(self.n_clients), "--force")
        self._bind_loopback()
        for site in self.sites():
            allow_in_local_dir(self.prod_dir / site / "local")
        allow_in_local_dir(self.prod_dir / "server" / "local")

    def _edit_json(self, path: Path, edit) -> None:
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data, indent=2))

    def _bind_loopback(self) -> None:
        """Server on 127.0.0.1:<free port>; clients and admin connect there."""

        def server(data):
            for srv in data["servers"]:
                srv["service"]["target"] = f"localhost:{self.port}"
                srv["admin_port"] = self.port

        def client(data):
            for srv in data["servers"]:
                srv["service"]["target"] = f"localhost:{self.port}"

        def admin(data):
            data["admin"]["host"] = "localhost"
            data["admin"]["port"] = self.port

        prod = self.prod_dir
        self._edit_json(prod / "server" / "startup" / "fed_server.json", server)
        for site in self.sites():
            self._edit_json(prod / site / "startup" / "fed_client.json", client)
        for kit in prod.glob("*@*"):
            self._edit_json(kit / "startup" / "fed_admin.json", admin)

    def start(self, timeout: float = 300) -> None:
        """Start the network; wait (up to ``timeout``: a loaded 2-core machine can take minutes) for every client."""
        log = open(self.root / "poc.log", "a")
        self._logs.append(log)
        proc = subprocess.Popen(nvflare_command() + ["poc", "start"], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root,
                                start_new_session=True)
        self._group = proc.pid
        proc.wait(timeout=timeout)
        self._wait_ready(timeout)


def submit_and_wait(network: KitNetwork, job_dir, timeout: float = 900,
                    progress: Optional[Callable[[float], None]] = None):
    """Submit a job folder through the FLARE API, wait until it finishes, download its result.

    The admin session runs in a child process: FLARE's admin client shares process-wide state
    (FOBS, cell settings) with anything else FLARE did in the caller, e.g. earlier tests.
    ``progress(elapsed_seconds)`` is called every few seconds while the job runs.
    """
    out = _admin_call(["submit", str(network.admin_kit), str(Path(job_dir).resolve()), str(timeout)],
                      network.env, timeout + 120, progress)
    return out["job_id"], out["status"], Path(out["result"]) if out.get("result") else None


def _names_folder(pid: int, folder: str) -> bool:
    """Whether the process's command line names ``folder`` itself (not ``folder-2`` beside it)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg.decode(errors="replace").rstrip("/") == folder or
               arg.decode(errors="replace").startswith(folder + "/") for arg in cmdline)


def submit_job(network: KitNetwork, job_dir) -> str:
    """Submit a job folder through the FLARE API and return its id at once (see :func:`wait_job`)."""
    return _admin_call(["submit-only", str(network.admin_kit), str(Path(job_dir).resolve())], network.env, 180)["job_id"]


def wait_job(network: KitNetwork, job_id: str, timeout: float = 900):
    """Wait for a submitted job to finish; ``(status, downloaded result folder)``."""
    out = _admin_call(["wait", str(network.admin_kit), job_id, str(timeout)], network.env, timeout + 120)
    return out["status"], Path(out["result"]) if out.get("result") else None


def job_status(admin_kit, job_id: str, env: dict) -> str:
    """A submitted job's status (``RUNNING``, ``FINISHED:COMPLETED`` ...) as the server reports it."""
    return _admin_call(["job-status", str(admin_kit), job_id], env, 120)["status"]


def _admin_call(args, env: dict, timeout: float, progress: Optional[Callable[[float], None]] = None) -> dict:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "flaretune.poc"] + args, env=env, stdout=out, stderr=err,
                                text=True, stdin=subprocess.DEVNULL)
        started = time.monotonic()
        try:
            while proc.poll() is None:
                if time.monotonic() - started > timeout:
                    raise FlaretuneError(f"FLARE admin call {args[0]} did not return within {timeout:.0f}s")
                if progress:
                    progress(time.monotonic() - started)
                time.sleep(2)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise FlaretuneError(f"FLARE admin call {args[0]} failed: {stdout[-1500:]}{stderr[-1500:]}")
    return json.loads(lines[-1])


def _session(admin_kit: str, timeout: float = 30):
    from nvflare.fuel.flare_api.flare_api import new_secure_session

    return new_secure_session(Path(admin_kit).name, admin_kit, timeout=timeout)  # kits are named after users


def _cmd_wait_ready(admin_kit: str, n_clients: str, timeout: str) -> dict:
    deadline = time.time() + float(timeout)
    last = None
    while time.time() < deadline:
        try:
            sess = _session(admin_kit)
            try:
                clients = sess.get_system_info().client_info
                if len(clients) >= int(n_clients):
                    return {"clients": len(clients)}
                last = f"{len(clients)}/{n_clients} clients connected"
            finally:
                sess.close()
        except Exception as err:  # the server is still starting
            last = str(err)
        time.sleep(2)
    raise SystemExit(f"POC network not ready after {float(timeout):.0f}s: {last}")


def _cmd_submit(admin_kit: str, job_dir: str, timeout: str) -> dict:
    job_id = _cmd_submit_only(admin_kit, job_dir)["job_id"]
    return {"job_id": job_id, **_cmd_wait(admin_kit, job_id, timeout)}


def _cmd_submit_only(admin_kit: str, job_dir: str) -> dict:
    sess = _session(admin_kit)
    try:
        return {"job_id": sess.submit_job(job_dir)}
    finally:
        sess.close()


def _cmd_job_status(admin_kit: str, job_id: str) -> dict:
    sess = _session(admin_kit)
    try:
        return {"status": sess.get_job_meta(job_id).get("status")}
    finally:
        sess.close()


def _cmd_wait(admin_kit: str, job_id: str, timeout: str) -> dict:
    sess = _session(admin_kit)
    try:
        deadline = time.time() + float(timeout)
        status = None
        while time.time() < deadline:
            status = sess.get_job_meta(job_id).get("status")
            if status and status.startswith("FINISHED"):
                break
            time.sleep(3)
        else:
            sess.abort_job(job_id)
            raise SystemExit(f"job {job_id} did not finish within {float(timeout):.0f}s (last status {status})")
        return {"status": status, "result": sess.download_job_result(job_id)}
    finally:
        sess.close()


if __name__ == "__main__":  # the admin side, run as a child: python -m flaretune.poc wait-ready|submit ...
    command, *rest = sys.argv[1:]
    handler = {"wait-ready": _cmd_wait_ready, "submit": _cmd_submit, "submit-only": _cmd_submit_only,
               "wait": _cmd_wait, "job-status": _cmd_job_status}[command]
    print(json.dumps(handler(*rest)), flush=True)
