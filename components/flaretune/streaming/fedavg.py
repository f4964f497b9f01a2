"""FedAvg over full models that travel as streamed folders: for jobs that train more than adapters.

Each round: push the global model folder to every site (``model_push``, resumable, bounded memory), send
``train`` naming that folder, receive each site's trained folder on the ``model_update`` stream, and average
the folders tensor by tensor on disk (:func:`flaretune.streaming.aggregate.average_folders`). No process
ever holds more than one chunk of a transfer, and the server never holds a whole model: the only step
whose memory grows with the model is the sites' own training. The site side is
:class:`flaretune.executors.full_train.FullModelTrainExecutor` (or any executor that answers ``train``
the same way: see :mod:`flaretune.streaming.protocol`).
"""

import json
import shutil
import time
from pathlib import Path
from typing import List, Optional

from nvflare.apis.client import Client
from nvflare.apis.controller_spec import Task
from nvflare.apis.fl_context import FLContext
from nvflare.apis.impl.controller import Controller
from nvflare.apis.shareable import ReturnCode, Shareable
from nvflare.apis.signal import Signal

from flaretune.errors import ConfigError
from flaretune.streaming import protocol as P
from flaretune.streaming.aggregate import average_folders
from flaretune.streaming.chunks import DEFAULT_CHUNK_MB, chunk_size_from_mb
from flaretune.streaming.consumer import register_model_receiver
from flaretune.streaming.controller import push_folder
from flaretune.streaming.memory import pin_mmap_threshold
from flaretune.paths import resolve_site_dir, resolve_under
from flaretune.streaming.schedule import TransferError

HISTORY_FILE = "history.json"


class StreamedFedAvg(Controller):
    def __init__(
        self,
        model_dir: str,
        num_rounds: int = 3,
        model_name: str = "",
        train_task_name: str = "train",
        push_task_name: str = P.TASK_NAME,
        chunk_mb: float = DEFAULT_CHUNK_MB,
        shard_mb: float = 1024,
        global_dir: str = "global_model",
        updates_dir: str = "updates",
        keep_updates: bool = False,
        train_timeout: int = 0,
        max_retries: int = 3,
        chunk_timeout: float = 300.0,
    ):
        """FedAvg rounds in which the global model and every site's update are streamed model folders.

        Args:
            model_dir: the initial model: a Hugging Face folder (safetensors + config + tokenizer); relative
                paths are under the server workspace root.
            num_rounds: rounds of push → train → average.
            model_name: name of the model at the sites (``<name>-round-<r>``); default the folder's name.
            train_task_name / push_task_name: the tasks the sites' executor handles.
            chunk_mb: chunk size of the pushes, in (0, 1024].
            shard_mb: largest safetensors shard of the averaged model.
            global_dir: where ``round-<r>/`` folders and ``history.json`` go; relative to this job's run folder.
            updates_dir: where the sites' updates land; relative to this job's run folder.
            keep_updates: keep each round's site updates (for inspection); by default they are deleted
                once averaged.
            train_timeout: seconds for the ``train`` task, 0 for no limit.
            max_retries / chunk_timeout: as for ``ModelPushController``.
        """
        super().__init__()
        self.model_dir = model_dir
        self.num_rounds = num_rounds
        self.model_name = model_name
        self.train_task_name = train_task_name
        self.push_task_name = push_task_name
        self.chunk_mb = chunk_mb
        self.shard_mb = shard_mb
        self.global_dir = global_dir
        self.updates_dir = updates_dir
        self.keep_updates = keep_updates
        self.train_timeout = train_timeout
        self.max_retries = max_retries
        self.chunk_timeout = chunk_timeout
        if not isinstance(model_dir, str) or not model_dir:
            raise ConfigError(f"model_dir must be a folder path, got {model_dir!r}")
        if isinstance(num_rounds, bool) or not isinstance(num_rounds, int) or num_rounds < 1:
            raise ConfigError(f"num_rounds must be an int >= 1, got {num_rounds!r}")
        self._chunk_size = chunk_size_from_mb(chunk_mb)
        pin_mmap_threshold()
        self._run_dir: Optional[Path] = None
        self._updates_root: Optional[Path] = None

    # -- paths ----------------------------------------------------------------------------------
    def start_controller(self, fl_ctx: FLContext):
        workspace = fl_ctx.get_engine().get_workspace()
        self._run_dir = Path(workspace.get_run_dir(fl_ctx.get_job_id()))
        self._updates_root = resolve_under(self._run_dir, self.updates_dir)
        register_model_receiver(fl_ctx, self._updates_root, topic=P.UPDATE_TOPIC)

    def stop_controller(self, fl_ctx: FLContext):
        pass

    def process_result_of_unknown_task(
        self, client: Client, task_name: str, client_task_id: str, result: Shareable, fl_ctx: FLContext
    ):
        self.log_warning(fl_ctx, f"ignoring late result of task {task_name!r} from {client.name}")

    # -- rounds ---------------------------------------------------------------------------------
    def control_flow(self, abort_signal: Signal, fl_ctx: FLContext):
        current = resolve_site_dir(self.model_dir, fl_ctx)
        global_root = resolve_under(self._run_dir, self.global_dir)
        history = {"model_dir": str(current), "rounds": []}
        try:
            if not (current.is_dir() and any(current.glob("*.safetensors"))):
                raise ConfigError(f"model_dir {str(current)!r} is not a folder with safetensors shards")
            name = self.model_name or current.name
            for r in range(self.num_rounds):
                if abort_signal.triggered:
                    return
                started = time.time()
                targets = [c.name for c in fl_ctx.get_engine().get_clients()]
                site_model = f"{name}-round-{r}"
                self.log_info(fl_ctx, f"round {r + 1}/{self.num_rounds}: pushing {current} as {site_model}")
                push = push_folder(self, fl_ctx, abort_signal, current, model_name=site_model,
                                   chunk_size=self._chunk_size, targets=targets, task_name=self.push_task_name,
                                   max_retries=self.max_retries, chunk_timeout=self.chunk_timeout)
                results = self._train(fl_ctx, abort_signal, targets, site_model, r)
                if abort_signal.triggered:
                    return
                out = global_root / f"round-{r + 1}"
                folders = [folder for _, folder, _, _ in results]
                weights = [n for _, _, n, _ in results]
                average_folders(folders, weights, out, shard_mb=self.shard_mb)
                if not self.keep_updates:
                    for folder in folders:
                        shutil.rmtree(folder, ignore_errors=True)
                history["rounds"].append({
                    "round": r + 1,
                    "global_model": str(out),
                    "push_seconds": round(push["hash_seconds"] + push["prepare_seconds"] + push["stream_seconds"], 2),
                    "model_bytes": push["total_bytes"],
                    "seconds": round(time.time() - started, 2),
                    "sites": {site: {"num_examples": n, "update": str(folder), "metrics": m}
                              for site, folder, n, m in results},
                })
                self._write_history(global_root, history)
                self.log_info(fl_ctx, f"round {r + 1}/{self.num_rounds}: averaged {len(results)} updates into {out}")
                current = out
        except (TransferError, ConfigError) as err:
            history["error"] = str(err)
            self._write_history(global_root, history)
            self.log_error(fl_ctx, f"streamed FedAvg failed: {err}")
            self.system_panic(f"streamed FedAvg failed: {err}", fl_ctx)

    def _train(self, fl_ctx: FLContext, abort_signal: Signal, targets: List[str], site_model: str, r: int):
        task = Task(
            name=self.train_task_name,
            data=Shareable({P.KEY_MODEL_NAME: site_model, P.KEY_ROUND: r}),
            timeout=int(self.train_timeout),
        )
        self.broadcast_and_wait(task, fl_ctx, targets=targets, min_responses=len(targets), abort_signal=abort_signal)
        results = []
        for ct in task.client_tasks:
            site, result = ct.client.name, ct.result
            rc = result.get_return_code(ReturnCode.OK) if isinstance(result, Shareable) else "no result"
            if rc != ReturnCode.OK:
                raise TransferError(f"round {r + 1}: site {site} did not return a trained model ({rc})")
            update = result.get(P.KEY_UPDATE) or {}
            folder = self._updates_root / str(update.get("model_name", ""))
            missing = [f for f in update.get("file_sha256", {}) if not (folder / f).is_file()]
            if not update.get("model_name") or missing or not update.get("file_sha256"):
                raise TransferError(
                    f"round {r + 1}: the update of {site} is not complete at {folder} "
                    f"(missing: {', '.join(missing) or 'its description'})"
                )
            results.append((site, folder, float(result.get(P.KEY_NUM_EXAMPLES, 0) or 0), result.get(P.KEY_METRICS, {})))
        if len(results) < len(targets) and not abort_signal.triggered:
            answered = {site for site, _, _, _ in results}
            raise TransferError(f"round {r + 1}: no trained model from {', '.join(sorted(set(targets) - answered))}")
        return sorted(results)

    @staticmethod
    def _write_history(global_root: Path, history: dict) -> None:
        global_root.mkdir(parents=True, exist_ok=True)
        (global_root / HISTORY_FILE).write_text(json.dumps(history, indent=1))
