"""Read, adjust and write FLARE job folders (meta.json + app/config/*.json) without FLARE.

``flaretune compare`` and the tests derive run-specific copies of a shipped job folder (rounds,
site count, data paths, tiny test models, quantization) instead of keeping near-duplicate folders.
"""

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional

from flaretune.errors import ConfigError

SERVER_CONFIG = "app/config/config_fed_server.json"
CLIENT_CONFIG = "app/config/config_fed_client.json"

QUANTIZE_FILTER = "flaretune.filters.quantize.QuantizeFilter"
DEQUANTIZE_FILTER = "flaretune.filters.quantize.DequantizeFilter"
MODEL_PUSH_WORKFLOW = "flaretune.streaming.controller.ModelPushController"
MODEL_PUSH_EXECUTOR = "flaretune.streaming.receiver.ModelPushReceiver"


class JobFolder:
    """A job folder loaded into memory: ``meta``, ``server`` and ``client`` config dicts."""

    def __init__(self, path):
        self.path = Path(path)
        for rel in ("meta.json", SERVER_CONFIG, CLIENT_CONFIG):
            if not (self.path / rel).is_file():
                raise ConfigError(f"{self.path}: not a flaretune job folder (missing {rel})")
        self.meta = self._read("meta.json")
        self.server = self._read(SERVER_CONFIG)
        self.client = self._read(CLIENT_CONFIG)

    @classmethod
    def from_configs(cls, name: str, meta: dict, server: dict, client: dict) -> "JobFolder":
        """A job held in memory (a recipe's configs, edited in place by the same methods); ``name`` stands
        for its folder in messages. :meth:`write` needs a folder on disk."""
        folder = cls.__new__(cls)
        folder.path, folder.meta, folder.server, folder.client = Path(name), meta, server, client
        return folder

    def _read(self, rel: str) -> dict:
        path = self.path / rel
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None

    # -- lookups ------------------------------------------------------------------------------------
    def component(self, config: dict, component_id: str) -> dict:
        for comp in config.get("components", []):
            if comp.get("id") == component_id:
                return comp
        raise ConfigError(f"{self.path}: no component with id {component_id!r}")

    def workflow(self) -> dict:
        """The training workflow: the first one that is not a ``model_push`` that runs before it."""
        workflows = [w for w in self.server.get("workflows", []) if w.get("path") != MODEL_PUSH_WORKFLOW]
        if not workflows:
            raise ConfigError(f"{self.path}/{SERVER_CONFIG}: no workflow")
        return workflows[0]

    def executor(self) -> dict:
        """The training executor: the first one that is not a ``model_push`` receiver."""
        executors = [e for e in self.client.get("executors", []) if e["executor"].get("path") != MODEL_PUSH_EXECUTOR]
        if not executors:
            raise ConfigError(f"{self.path}/{CLIENT_CONFIG}: no executor")
        return executors[0]["executor"]

    def add_model_push(self, model_dir: str, model_name: str = "base", **push_args) -> None:
        """Push ``model_dir`` to every site before training (``<site workspace>/models/<model_name>``) and
        let the training executor start from it."""
        self.server["workflows"] = [w for w in self.server.get("workflows", []) if w.get("path") != MODEL_PUSH_WORKFLOW]
        self.server["workflows"].insert(0, {"id": "model_push", "path": MODEL_PUSH_WORKFLOW,
                                            "args": {"model_dir": model_dir, "model_name": model_name, **push_args}})
        executors = [e for e in self.client.get("executors", []) if e["executor"].get("path") != MODEL_PUSH_EXECUTOR]
        executors.append({"tasks": ["model_push"], "executor": {"path": MODEL_PUSH_EXECUTOR,
                                                                 "args": {"dest_dir": "models"}}})
        self.client["executors"] = executors
        self.executor_args["base_model_dir"] = f"models/{model_name}"

    @property
    def executor_args(self) -> dict:
        return self.executor().setdefault("args", {})

    @property
    def persistor_args(self) -> dict:
        return self.component(self.server, "persistor").setdefault("args", {})

    @property
    def workflow_args(self) -> dict:
        return self.workflow().setdefault("args", {})

    @property
    def num_rounds(self) -> int:
        value = self.workflow_args.get("num_rounds", 1)
        if isinstance(value, str) and value.startswith("{"):
            value = self.server[value.strip("{}")]
        return int(value)

    # -- edits --------------------------------------------------------------------------------------
    def set_rounds(self, rounds: int) -> None:
        self.server["num_rounds"] = rounds
        self.workflow_args["num_rounds"] = "{num_rounds}"

    def set_sites(self, n_sites: int) -> None:
        self.meta["min_clients"] = n_sites

    def set_quantization(self, qtype: Optional[str], tasks: List[str]) -> None:
        """Quantize both directions (or, for ``None``/``"none"``, neither).

        Server→client task data and client→server results; filters are named task by task
        (FLARE 2.9 never runs a filter registered for ``"*"``).
        """
        from flaretune.filters import filter_config

        for config in (self.server, self.client):
            for key in ("task_data_filters", "task_result_filters"):
                config[key] = [f for f in config.get(key, []) if not _is_quant(f)]
        if not qtype or qtype == "none":
            return
        for side, config in (("server", self.server), ("client", self.client)):
            for key, entries in filter_config(side, tasks, quantization_type=qtype).items():
                config[key].extend(entries)

    def quantization(self) -> Optional[str]:
        for entry in self.client.get("task_result_filters", []):
            for flt in entry.get("filters", []):
                if flt.get("path") == QUANTIZE_FILTER:
                    return flt.get("args", {}).get("quantization_type", "nf4")
        return None

    def write(self, out_dir) -> Path:
        """Write a copy (the whole folder, then the edited configs) to ``out_dir``, or save in place."""
        out = Path(out_dir)
        if out.resolve() != self.path.resolve():
            if out.exists():
                shutil.rmtree(out)
            shutil.copytree(self.path, out)
        for rel, data in (("meta.json", self.meta), (SERVER_CONFIG, self.server), (CLIENT_CONFIG, self.client)):
            (out / rel).write_text(json.dumps(data, indent=2) + "\n")
        return out


def _is_quant(entry: Dict) -> bool:
    return any(f.get("path") in (QUANTIZE_FILTER, DEQUANTIZE_FILTER) for f in entry.get("filters", []))
