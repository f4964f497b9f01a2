"""FedAvg over full models that travel as streamed folders: for jobs that train more than adapters.

Each round: push the global model folder to every site (``model_push``, resumable, bounded memory), send
``train`` naming that folder, receive each site's trained folder on the ``model_update`` stream, and average
the folders tensor by tensor on disk (:func:`flaretune.streaming.aggregate.aggregate_folders`) through the
same round loop, strategy, result validation and checkpoints as the adapter workflow
(:func:`flaretune.aggregation.rounds.run_rounds`). No process
ever holds more than one chunk of a transfer, and the server never holds a whole model: the only step
whose memory grows with the model is the sites' own training. The site side is
:class:`flaretune.executors.full_train.FullModelTrainExecutor` (or any executor that answers ``train``
the same way: see :mod:`flaretune.streaming.protocol`).
"""

from pathlib import Path
from typing import Dict, List, Optional

from nvflare.apis.client import Client
from nvflare.apis.controller_spec import Task
from nvflare.apis.fl_context import FLContext
from nvflare.apis.impl.controller import Controller
from nvflare.apis.shareable import ReturnCode, Shareable
from nvflare.apis.signal import Signal

from flaretune.aggregation.checkpoint import CHECKPOINT_DIR, Checkpoint, resume_point, snapshot_folder
from flaretune.aggregation.rounds import HISTORY_FILE, RoundDriver, RoundSettings, SiteResult, run_rounds
from flaretune.aggregation.strategy import make_strategy
from flaretune.aggregation.validation import ValidationPolicy
from flaretune.errors import ConfigError, FlaretuneError
from flaretune.streaming import protocol as P
from flaretune.streaming.aggregate import FolderStore
from flaretune.streaming.chunks import DEFAULT_CHUNK_MB, chunk_size_from_mb
from flaretune.streaming.consumer import register_model_receiver
from flaretune.streaming.controller import push_folder
from flaretune.streaming.memory import pin_mmap_threshold
from flaretune.paths import resolve_site_dir, resolve_under
from flaretune.streaming.schedule import TransferError



class StreamedFedAvg(Controller, RoundDriver):
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
        aggregator: str = "fedavg",
        min_clients: int = 0,
        max_num_examples: float = 1_000_000,
        norm_outlier_factor: float = 10.0,
        seed: int = 0,
        resume_from: str = "",
    ):
        """FedAvg rounds in which the global model and every site's update are streamed model folders.

        Args:
            model_dir: the initial model: a Hugging Face folder (safetensors + config + tokenizer); relative
                paths are under the server workspace root.
            num_rounds: rounds of push → train → validate → aggregate (a resumed job counts completed ones).
            model_name: name of the model at the sites (``<name>-round-<r>``); default the folder's name.
            train_task_name / push_task_name: the tasks the sites' executor handles.
            chunk_mb: chunk size of the pushes, in (0, 1024].
            shard_mb: largest safetensors shard of the aggregated model.
            global_dir: where ``round-<r>/`` folders and ``history.json`` go; relative to this job's run folder.
            updates_dir: where the sites' updates land; relative to this job's run folder.
            keep_updates: keep each round's site updates (for inspection); by default they are deleted
                once aggregated.
            train_timeout: seconds for the ``train`` task, 0 for no limit.
            max_retries / chunk_timeout: as for ``ModelPushController``.
            aggregator: a strategy name (see flaretune.aggregation.strategy) taking no arguments here.
            min_clients / max_num_examples / norm_outlier_factor / seed / resume_from: as for FedAggController.
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
        self.aggregator = aggregator
        self.min_clients = min_clients
        self.max_num_examples = max_num_examples
        self.norm_outlier_factor = norm_outlier_factor
        self.seed = seed
        self.resume_from = resume_from
        if not isinstance(model_dir, str) or not model_dir:
            raise ConfigError(f"model_dir must be a folder path, got {model_dir!r}")
        if isinstance(num_rounds, bool) or not isinstance(num_rounds, int) or num_rounds < 1:
            raise ConfigError(f"num_rounds must be an int >= 1, got {num_rounds!r}")
        self._chunk_size = chunk_size_from_mb(chunk_mb)
        self._strategy = make_strategy(aggregator, policy=ValidationPolicy(max_num_examples, norm_outlier_factor))
        pin_mmap_threshold()
        self._run_dir: Optional[Path] = None
        self._updates_root: Optional[Path] = None
        self._fl_ctx = self._abort = None
        self._round_info: dict = {}
        self._restored = ""  # the checkpoint folder FLARE's job snapshot named

    # -- FLARE ----------------------------------------------------------------------------------
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

    def control_flow(self, abort_signal: Signal, fl_ctx: FLContext):
        self._fl_ctx, self._abort = fl_ctx, abort_signal
        current = resolve_site_dir(self.model_dir, fl_ctx)
        global_root = resolve_under(self._run_dir, self.global_dir)
        store = FolderStore(global_root, shard_mb=self.shard_mb, keep_updates=self.keep_updates)
        try:
            if not (current.is_dir() and any(current.glob("*.safetensors"))):
                raise ConfigError(f"model_dir {str(current)!r} is not a folder with safetensors shards")
            self._name = self.model_name or current.name
            resume = resume_point(fl_ctx.get_engine().get_workspace().get_root_dir(),
                                  self._restored or self.resume_from, store)
            run_rounds(self, store, self._strategy, RoundSettings(self.num_rounds, self.min_clients, self.seed),
                       current, global_root / HISTORY_FILE, Checkpoint(self._run_dir / CHECKPOINT_DIR), resume)
        except (TransferError, FlaretuneError) as err:
            self.fail(f"streamed FedAvg failed: {err}")

    def get_persist_state(self, fl_ctx: FLContext) -> dict:
        return {"checkpoint": str(self._run_dir / CHECKPOINT_DIR)} if self._run_dir else {}

    def restore(self, state_data: dict, fl_ctx: FLContext) -> None:
        self._restored = snapshot_folder(state_data)

    # -- RoundDriver ----------------------------------------------------------------------------
    def available_clients(self) -> List[str]:
        return sorted(c.name for c in self._fl_ctx.get_engine().get_clients())

    def train(self, round_number, sites, global_model, meta) -> Dict[str, SiteResult]:
        site_model = f"{self._name}-round-{round_number}"
        self.info(f"round {round_number + 1}/{self.num_rounds}: pushing {global_model} as {site_model}")
        push = push_folder(self, self._fl_ctx, self._abort, global_model, model_name=site_model,
                           chunk_size=self._chunk_size, targets=sites, task_name=self.push_task_name,
                           max_retries=self.max_retries, chunk_timeout=self.chunk_timeout)
        self._round_info = {
            "push_seconds": round(push["hash_seconds"] + push["prepare_seconds"] + push["stream_seconds"], 2),
            "model_bytes": push["total_bytes"],
        }
        task = Task(
            name=self.train_task_name,
            data=Shareable({P.KEY_MODEL_NAME: site_model, P.KEY_ROUND: round_number, **meta}),
            timeout=int(self.train_timeout),
        )
        self.broadcast_and_wait(task, self._fl_ctx, targets=sites, min_responses=len(sites), abort_signal=self._abort)
        results = {}
        for ct in task.client_tasks:
            site, result = ct.client.name, ct.result
            rc = result.get_return_code(ReturnCode.OK) if isinstance(result, Shareable) else "no result"
            if rc != ReturnCode.OK:
                self.warn(f"round {round_number + 1}: site {site} did not return a trained model ({rc})")
                continue
            update = result.get(P.KEY_UPDATE) or {}
            folder = self._updates_root / str(update.get("model_name", ""))
            missing = [f for f in update.get("file_sha256", {}) if not (folder / f).is_file()]
            if not update.get("model_name") or missing or not update.get("file_sha256"):
                self.warn(f"round {round_number + 1}: the update of {site} is not complete at {folder} "
                          f"(missing: {', '.join(missing) or 'its description'})")
                continue
            results[site] = SiteResult(folder, result.get(P.KEY_NUM_EXAMPLES), result.get(P.KEY_METRICS, {}),
                                       update.get("total_bytes"))
        return results

    def publish(self, global_model, round_number, final) -> str:
        return str(global_model)

    def round_info(self) -> dict:
        return self._round_info

    def aborted(self) -> bool:
        return bool(self._abort and self._abort.triggered)

    def info(self, message: str) -> None:
        self.log_info(self._fl_ctx, message)

    def warn(self, message: str) -> None:
        self.log_warning(self._fl_ctx, message)

    def fail(self, message: str) -> None:
        self.log_error(self._fl_ctx, message)
        self.system_panic(message, self._fl_ctx)
