"""What the provisioning tests share: the templates provisioned as written or renamed to run on loopback, and the
``nvflare`` command line run as a site admin would, in the test's own HOME."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from flaretune.poc import free_port

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "provisioning"
NVFLARE = Path(sys.executable).parent / "nvflare"


def cli_env(home: Path, **extra) -> dict:
    """The venv's bin first on PATH, HOME in the test's folder (``nvflare config`` writes ``~/.nvflare``)."""
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HOME=str(home), **extra)
    env["PATH"] = str(NVFLARE.parent) + os.pathsep + env.get("PATH", "")
    return env


def nvflare(*args, env: dict, cwd=REPO, timeout: float = 180) -> subprocess.CompletedProcess:
    """``nvflare ARGS`` as a user types it; stdout and stderr as text."""
    return subprocess.run([str(NVFLARE), *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def nvflare_json(*args, env: dict, timeout: float = 180) -> dict:
    """``nvflare --format json ARGS``: the envelope's ``data`` (fails the test on an error envelope)."""
    proc = nvflare("--format", "json", *args, env=env, timeout=timeout)
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["status"] == "ok", proc.stdout[-2000:] + proc.stderr[-2000:]
    return out["data"]


def provision(project: Path, root: Path, workspace: str = "ws") -> Path:
    """``nvflare provision -p project -w root/workspace``; the ``prod_00`` folder of kits."""
    proc = nvflare("provision", "-p", project, "-w", root / workspace, env=cli_env(root / "home"), cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return root / workspace / yaml.safe_load(project.read_text())["name"] / "prod_00"


def loopback_project(template: str, root: Path, edit=None) -> Path:
    """``provisioning/<template>`` with its server renamed ``localhost`` on a free port (the only edit a real
    network would not make), then ``edit(project)``; written to ``root/project.yml``."""
    project = yaml.safe_load((TEMPLATES / template).read_text())
    server = next(p for p in project["participants"] if p["type"] == "server")
    server.update(name="localhost", fed_learn_port=free_port())
    if edit:
        edit(project)
    path = root / "project.yml"
    path.write_text(yaml.safe_dump(project))
    return path


def foreign_kit(project: Path, root: Path, client: str) -> Path:
    """Another provisioning of the same project (same name, server and port, a new root CA) holding one client
    ``client``: what someone outside the network gets by running ``nvflare provision`` on a copy of its file."""
    data = yaml.safe_load(project.read_text())
    server = next(p for p in data["participants"] if p["type"] == "server")
    admin = next(p for p in data["participants"] if p["type"] == "admin")
    data["participants"] = [server, {"name": client, "type": "client", "org": client.replace("-", "_")}, admin]
    path = root / "foreign.yml"
    path.write_text(yaml.safe_dump(data))
    return provision(path, root, workspace="foreign")


def keep_jobs_in(server_kit: Path, folder: Path) -> None:
    """The server's job store and snapshots in ``folder`` (``local/resources.json``), not FLARE's default
    ``/tmp/nvflare/...``, which every provisioned server on the machine shares (a server schedules the
    SUBMITTED jobs it finds there, also another network's)."""
    local = server_kit / "local"
    resources = json.loads((local / "resources.json.default").read_text())
    resources["snapshot_persistor"]["args"]["storage"]["args"]["root_dir"] = str(folder / "snapshot-storage")
    for component in resources["components"]:
        if component["id"] == "job_manager":
            component["args"]["uri_root"] = str(folder / "jobs-storage")
    (local / "resources.json").write_text(json.dumps(resources, indent=2))
