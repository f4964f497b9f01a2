"""A flaretune job as a FLARE recipe: its job config (the JSON a job folder holds), built as FLARE Job API objects.

A recipe composes ``config_fed_server.json`` / ``config_fed_client.json`` as dicts from its dataclass arguments
(:mod:`flaretune.recipes.args`) and the same JSON helpers ``flaretune compare`` uses, then constructs every
component (so a wrong argument fails now, with the component's own message) and hands them to a
:class:`~nvflare.job_config.api.FedJob`. Each component is told to export exactly the arguments the config
gives it (FLARE's exporter would otherwise drop those equal to a default), so ``recipe.export`` writes that
JSON back and the checked-in job folders are the recipes' export.

Before a run, :meth:`FlaretuneRecipe.process_env` lets the sites build flaretune's components: FLARE 2.9 builds
only classes its ``class_allow_list`` allows, and ``SimEnv`` installs FLARE's default list into a fresh
workspace, which refuses them.
"""

import importlib
import inspect
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from nvflare.job_config.api import FedJob
from nvflare.job_config.defs import FilterType
from nvflare.recipe.spec import ExecEnv, Recipe

from flaretune.errors import ConfigError
from flaretune.jobcfg import CLIENT_CONFIG, SERVER_CONFIG

PACKAGE = "flaretune"  # installed at every site: the exporter copies none of it into custom/
SITE_BUILDER = "flaretune.provisioning.builder.FlaretuneSiteBuilder"
_SECTIONS = ("format_version", "workflows", "executors", "components", "task_data_filters", "task_result_filters")
_FILTER_TYPES = (("task_data_filters", FilterType.TASK_DATA), ("task_result_filters", FilterType.TASK_RESULT))


def _init_parameters(cls) -> set:
    """The constructor arguments FLARE's exporter sees: a class's own, and its bases' only when it takes
    ``*args, **kwargs`` (the rule of ``nvflare.fuel.utils.class_utils.get_component_init_parameters``)."""
    params = inspect.signature(cls.__init__).parameters
    names = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - {"self"}
    if "args" in params and "kwargs" in params:
        for base in cls.__bases__:
            names |= _init_parameters(base)
    return names


def build_component(entry: dict, where: str):
    """Construct ``{"path": ..., "args": {...}}`` and mark it to export exactly those ``args``."""
    path, args = entry["path"], dict(entry.get("args", {}))
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    unknown = sorted(set(args) - _init_parameters(cls))
    if unknown:
        raise ConfigError(f"{where}: {name} has no argument {', '.join(map(repr, unknown))}")
    component = cls(**args)
    kept = vars(component)
    lost = [a for a in args if a not in kept and f"_{a}" not in kept]
    if lost:  # FLARE's exporter reads each argument back from self.<name>: it would drop these silently
        raise RuntimeError(f"{path} does not keep {lost} as attributes; its export would lose them")
    component._always_serialize_args = tuple(args)
    return component


def _add_app(job: FedJob, config: dict, side: str) -> None:
    to = job.to_server if side == "server" else job.to_clients
    name = SERVER_CONFIG if side == "server" else CLIENT_CONFIG
    for i, workflow in enumerate(config.get("workflows", [])):
        job.to_server(build_component(workflow, f"{name} workflows[{i}]"), id=workflow["id"])
    for i, entry in enumerate(config.get("executors", [])):
        job.to_clients(build_component(entry["executor"], f"{name} executors[{i}]"), tasks=list(entry["tasks"]))
    for component in config.get("components", []):
        to(build_component(component, f"{name} component {component['id']!r}"), id=component["id"])
    for key, filter_type in _FILTER_TYPES:
        for i, entry in enumerate(config.get(key, [])):
            for flt in entry["filters"]:
                to(build_component(flt, f"{name} {key}[{i}]"), filter_type=filter_type, tasks=list(entry["tasks"]))
    params = {k: v for k, v in config.items() if k not in _SECTIONS}
    if params:  # top-level settings, e.g. the server's task_request_interval
        to(params)


class FlaretuneRecipe(Recipe):
    """Base of the flaretune recipes: a job config (``server``/``client`` dicts) as a FLARE recipe."""

    def __init__(self, name: str, min_clients: int, server: dict, client: dict):
        self.min_clients = min_clients
        self.server_config, self.client_config = server, client
        job = FedJob(name=name, min_clients=min_clients)
        job.set_app_packages([PACKAGE])
        _add_app(job, server, "server")
        _add_app(job, client, "client")
        self._scratch: Optional[tempfile.TemporaryDirectory] = None
        super().__init__(job)

    @property
    def tasks(self) -> List[str]:
        """The sites' tasks, in the order their executors name them."""
        return [t for entry in self.client_config.get("executors", []) for t in entry["tasks"]]

    # -- environments -------------------------------------------------------------------------------
    def process_env(self, env: ExecEnv) -> None:
        from nvflare.recipe.poc_env import PocEnv
        from nvflare.recipe.sim_env import SimEnv

        if isinstance(env, SimEnv):
            from flaretune.provisioning.policy import allow_in_local_dir

            path = allow_in_local_dir(Path(env.workspace_root) / self.name / "local")
            say(f"allowed 'flaretune.' components in {path} (class_allow_list, as `flaretune site-policy` does)")
        elif isinstance(env, PocEnv) and not env.project_conf_path:
            env.project_conf_path = str(self._poc_project(env))
            say(f"the POC kits allow 'flaretune.' components (FlaretuneSiteBuilder in {env.project_conf_path})")

    def _poc_project(self, env) -> Path:
        """FLARE's POC project for the env's sites, with :class:`FlaretuneSiteBuilder` after its static files."""
        import yaml
        from nvflare.lighter import provision
        from nvflare.tool.poc.poc_commands import update_clients, update_server_name

        self._scratch = tempfile.TemporaryDirectory(prefix="flaretune-poc-")
        path = Path(self._scratch.name) / "project.yml"
        provision.gen_default_project_config("dummy_project.yml", str(path))
        project = update_server_name(yaml.safe_load(path.read_text()))
        project = update_clients(env.clients or [], env.num_clients, project)
        builders = project["builders"]
        static = next(i for i, b in enumerate(builders) if b["path"].endswith("StaticFileBuilder"))
        builders.insert(static + 1, {"path": SITE_BUILDER, "args": {}})
        path.write_text(yaml.safe_dump(project, sort_keys=False))
        return path

    def run(self, env: ExecEnv, server_exec_params=None, client_exec_params=None):
        try:
            return super().run(env, server_exec_params=server_exec_params, client_exec_params=client_exec_params)
        finally:
            if self._scratch is not None:  # the POC provisioning has copied its project file
                self._scratch.cleanup()
                self._scratch = None

    # -- export -------------------------------------------------------------------------------------
    def export_folder(self, out_dir) -> Path:
        """Write the job folder to ``out_dir`` (its ``meta.json`` and ``app/``; other files such as README.md
        stay). FLARE writes each filter chain's tasks from a set: they are put in the executors' order."""
        out = Path(out_dir)
        if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / "meta.json").is_file()):
            raise ConfigError(f"{out}: exists and is not a job folder (no meta.json); give a new or empty folder")
        with tempfile.TemporaryDirectory() as tmp:
            self.export(tmp)
            exported = Path(tmp) / self.name
            for rel in ("meta.json", SERVER_CONFIG, CLIENT_CONFIG):
                _write_json(exported / rel, _ordered_tasks(json.loads((exported / rel).read_text()), self.tasks))
            out.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(out / "app", ignore_errors=True)
            shutil.copytree(exported / "app", out / "app")
            shutil.copy(exported / "meta.json", out / "meta.json")
        return out


def _ordered_tasks(config: dict, order: List[str]) -> dict:
    for key, _ in _FILTER_TYPES:
        for entry in config.get(key, []):
            entry["tasks"] = sorted(entry["tasks"], key=lambda t: (order.index(t) if t in order else len(order), t))
    return config


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=4) + "\n")  # FLARE's exporter indents by 4


def say(line: str) -> None:
    print(f"flaretune: {line}", file=sys.stdout, flush=True)
