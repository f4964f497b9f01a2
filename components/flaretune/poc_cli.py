"""``flaretune poc start|status|stop``: a FLARE POC network on this machine (loopback), with flaretune allowed.

``start`` prepares the POC workspace (``nvflare poc prepare``, every site's ``class_allow_list`` extended as
``flaretune site-policy`` does, server bound to 127.0.0.1 on a free port), starts the server and the sites
each in a session of its own so they outlive the command, submits ``--job`` when given and prints where the
admin startup kit is. ``status`` says which of them run; ``stop`` ends every process under the workspace.
The network's pids and port are kept in ``WORKSPACE/flaretune-poc.json``.
"""

import json
import os
import sys
from pathlib import Path

from flaretune.cliargs import positive_int
from flaretune.errors import ConfigError

STATE_FILE = "flaretune-poc.json"
DEFAULT_WORKSPACE = "flaretune-poc"


def _state_path(workspace: Path) -> Path:
    return workspace / STATE_FILE


def _read_state(workspace: Path):
    try:
        return json.loads(_state_path(workspace).read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _check_job(job, sites: int) -> None:
    """The job folder is a flaretune job that can deploy on ``sites`` sites (checked before anything starts)."""
    from flaretune.jobcfg import JobFolder

    folder = JobFolder(job)
    needed = folder.meta.get("min_clients", 1)
    if isinstance(needed, int) and needed > sites:
        raise ConfigError(f"{folder.path / 'meta.json'}: min_clients {needed} needs --sites {needed} or more, "
                          f"got --sites {sites}")


def _start(args) -> int:
    from flaretune.poc import PocNetwork, submit_job

    workspace = Path(args.workspace).resolve()
    if args.job:
        _check_job(args.job, args.sites)
    state = _read_state(workspace)
    if state and any(_alive(pid) for pid in state["pids"].values()):
        raise ConfigError(f"a POC network already runs in {workspace}: flaretune poc stop --workspace {workspace}")
    network = PocNetwork(workspace, n_clients=args.sites)
    try:
        print(f"preparing a POC network (server + {args.sites} sites, 127.0.0.1:{network.port}) in {workspace}",
              flush=True)
        network.prepare()
        pids = network.start_each(timeout=args.timeout)
        state = {"sites": args.sites, "port": network.port, "pids": pids, "admin_kit": str(network.admin_kit),
                 "jobs": []}
        _state_path(workspace).write_text(json.dumps(state, indent=1))
        print("running: " + ", ".join(f"{site} (pid {pid})" for site, pid in pids.items()), flush=True)
        if args.job:
            job_id = submit_job(network, args.job)
            state["jobs"].append(job_id)
            _state_path(workspace).write_text(json.dumps(state, indent=1))
            print(f"submitted {args.job} as job {job_id}")
    except BaseException:  # a failure or an interrupt leaves nothing running
        network.stop()
        _state_path(workspace).unlink(missing_ok=True)
        raise
    print(f"admin startup kit: {network.admin_kit}  (HOME={workspace / 'home'} for the FLARE API)")
    print(f"flaretune poc status --workspace {workspace}; flaretune poc stop --workspace {workspace}")
    return 0


def _status(args) -> int:
    workspace = Path(args.workspace).resolve()
    state = _read_state(workspace)
    if state is None:
        print(f"no POC network started by flaretune in {workspace}")
        return 1
    running = {site: _alive(pid) for site, pid in state["pids"].items()}
    for site, pid in state["pids"].items():
        print(f"{site}: {'running' if running[site] else 'not running'} (pid {pid})")
    if all(running.values()) and state["jobs"]:
        from flaretune.poc import job_status

        for job_id in state["jobs"]:
            print(f"job {job_id}: {job_status(state['admin_kit'], job_id, _env(workspace))}")
    print(f"admin startup kit: {state['admin_kit']}")
    return 0 if all(running.values()) else 1


def _env(workspace: Path) -> dict:
    from flaretune.simulate import venv_env

    return venv_env({"HOME": str(workspace / "home"), "NVFLARE_POC_WORKSPACE": str(workspace / "poc")})


def _stop(args) -> int:
    from flaretune.poc import PocNetwork

    workspace = Path(args.workspace).resolve()
    state = _read_state(workspace)
    network = PocNetwork(workspace, n_clients=(state or {}).get("sites", 1))
    if not network.workspace.is_dir():
        print(f"no POC workspace in {workspace}: nothing to stop")
        return 0
    before = len(network._workspace_pids())
    network.stop()
    left = network._workspace_pids()
    _state_path(workspace).unlink(missing_ok=True)
    if left:
        print(f"flaretune: {len(left)} process(es) under {workspace} could not be stopped: {left}", file=sys.stderr)
        return 1
    print(f"stopped {before} process(es); nothing runs under {workspace}")
    return 0


def register(subparsers) -> None:
    poc = subparsers.add_parser("poc", help="a FLARE POC network on this machine: start, status, stop")
    sub = poc.add_subparsers(dest="poc_command", required=True)
    start = sub.add_parser("start", help="prepare and start server and sites on loopback; submit --job")
    start.add_argument("--sites", type=positive_int, default=2, help="number of sites (default 2)")
    start.add_argument("--job", default="", help="a job folder to submit once the network is up")
    start.add_argument("--timeout", type=positive_int, default=300, help="seconds to wait for the sites (300)")
    start.set_defaults(func=_start)
    status = sub.add_parser("status", help="which processes of the network run, and each submitted job's status")
    status.set_defaults(func=_status)
    stop = sub.add_parser("stop", help="end every process of the network; nothing is left running")
    stop.set_defaults(func=_stop)
    for cmd in (start, status, stop):
        cmd.add_argument("--workspace", default=os.environ.get("FLARETUNE_POC_WORKSPACE", DEFAULT_WORKSPACE),
                         help=f"the network's folder (default ./{DEFAULT_WORKSPACE})")
