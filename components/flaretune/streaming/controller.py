"""Server side of ``model_push``: send a model folder to every site before training, with bounded memory.

The workflow: hash the folder into a manifest (one read pass), send the ``model_push`` task so every site
prepares and says which chunks it still needs (resume), then one object stream broadcasts those chunks.
Put it first in a job's workflows; the training workflow that follows finds the model at each site.
"""

import json
import time
import uuid
from pathlib import Path
from typing import List, Optional

from nvflare.apis.client import Client
from nvflare.apis.controller_spec import ClientTask, Task
from nvflare.apis.fl_context import FLContext
from nvflare.apis.impl.controller import Controller
from nvflare.apis.shareable import ReturnCode, Shareable
from nvflare.apis.signal import Signal

from flaretune.errors import ConfigError
from flaretune.streaming import protocol as P
from flaretune.streaming.memory import pin_mmap_threshold
from flaretune.streaming.chunks import DEFAULT_CHUNK_MB, Manifest, build_manifest, chunk_size_from_mb
from flaretune.streaming.producer import DEFAULT_SLICE_MB, DEFAULT_STREAMS, stream_model_folder
from flaretune.paths import resolve_site_dir
from flaretune.streaming.schedule import FaultFn, TransferError


class ModelPushController(Controller):
    def __init__(
        self,
        model_dir: str,
        model_name: str = "",
        task_name: str = P.TASK_NAME,
        chunk_mb: float = DEFAULT_CHUNK_MB,
        slice_mb: float = DEFAULT_SLICE_MB,
        streams: int = DEFAULT_STREAMS,
        max_retries: int = 3,
        chunk_timeout: float = 300.0,
        prepare_timeout: int = 600,
        targets: Optional[List[str]] = None,
        report_path: str = "",
    ):
        """Push a model folder (safetensors shards, or a spilled state dict) to sites as a ``model_push`` task.

        Args:
            model_dir: folder (or single file) to send; relative paths are under the server workspace root.
            model_name: folder name the sites store it under (default: the folder's own name).
            task_name: task the sites' ``ModelPushReceiver`` handles.
            chunk_mb: chunk size in MiB, in (0, 1024]: the unit of checksum, resend and resume.
            slice_mb: largest message in MiB (a chunk travels as consecutive slices); memory per process is
                about ``streams`` x slice x the copies FLARE's messaging makes, whatever the chunk size.
            streams: parallel streams, so that reading, sending and writing overlap.
            max_retries: resends of a refused or lost chunk before the push fails.
            chunk_timeout: seconds to wait for all sites to acknowledge one chunk.
            prepare_timeout: seconds for every site to answer the prepare task.
            targets: site names; default every connected client.
            report_path: if set, a JSON summary (bytes, seconds, sites) is written there.
        """
        super().__init__()
        self.model_dir = model_dir
        self.model_name = model_name
        self.task_name = task_name
        self.chunk_mb = chunk_mb
        self.slice_mb = slice_mb
        self.streams = streams
        self.max_retries = max_retries
        self.chunk_timeout = chunk_timeout
        self.prepare_timeout = prepare_timeout
        self.targets = targets
        self.report_path = report_path
        if not isinstance(model_dir, str) or not model_dir:
            raise ConfigError(f"model_dir must be a folder path, got {model_dir!r}")
        self._chunk_size = chunk_size_from_mb(chunk_mb)
        chunk_size_from_mb(slice_mb, field_name="slice_mb")
        if isinstance(streams, bool) or not isinstance(streams, int) or not 1 <= streams <= 16:
            raise ConfigError(f"streams must be an int in 1..16, got {streams!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if not isinstance(chunk_timeout, (int, float)) or chunk_timeout <= 0:
            raise ConfigError(f"chunk_timeout must be a number of seconds > 0, got {chunk_timeout!r}")
        pin_mmap_threshold()  # this job process moves GBs in 1-8 MiB buffers: keep its RSS flat
        self.result: Optional[dict] = None

    def start_controller(self, fl_ctx: FLContext):
        pass

    def stop_controller(self, fl_ctx: FLContext):
        pass

    def process_result_of_unknown_task(
        self, client: Client, task_name: str, client_task_id: str, result: Shareable, fl_ctx: FLContext
    ):
        self.log_warning(fl_ctx, f"ignoring late result of task {task_name!r} from {client.name}")

    def _model_path(self, fl_ctx: FLContext) -> Path:
        path = resolve_site_dir(self.model_dir, fl_ctx)
        if not path.exists():
            raise ConfigError(f"model_dir {str(path)!r} does not exist")
        return path

    def control_flow(self, abort_signal: Signal, fl_ctx: FLContext):
        started = time.time()
        report = {"ok": False, "task_name": self.task_name, "chunk_size": self._chunk_size}
        try:
            report.update(self._push(abort_signal, fl_ctx))
            report["ok"] = True
        except (TransferError, ConfigError) as err:
            report["error"] = str(err)
            self.log_error(fl_ctx, f"model_push failed: {err}")
            self.system_panic(f"model_push failed: {err}", fl_ctx)
        finally:
            report["seconds"] = time.time() - started
            self.result = report
            if self.report_path:
                Path(self.report_path).write_text(json.dumps(report, indent=1))

    def _push(self, abort_signal: Signal, fl_ctx: FLContext, **hooks) -> dict:
        """Push the model folder; ``hooks`` (``manifest``, ``fault_fn``) are push_folder's, for test subclasses."""
        return push_folder(
            self,
            fl_ctx,
            abort_signal,
            self._model_path(fl_ctx),
            model_name=self.model_name,
            chunk_size=self._chunk_size,
            targets=self.targets,
            task_name=self.task_name,
            prepare_timeout=self.prepare_timeout,
            max_retries=self.max_retries,
            chunk_timeout=self.chunk_timeout,
            slice_mb=self.slice_mb,
            streams=self.streams,
            **hooks,
        )

    @staticmethod
    def _needs(client_tasks: List[ClientTask], targets: List[str]) -> dict:
        need_by_site = {}
        for ct in client_tasks:
            result = ct.result
            rc = result.get_return_code(ReturnCode.OK) if isinstance(result, Shareable) else "no result"
            if rc != ReturnCode.OK:
                raise TransferError(f"site {ct.client.name} did not prepare for model_push ({rc})")
            need_by_site[ct.client.name] = result.get(P.KEY_NEED) or {}
        missing = sorted(set(targets) - set(need_by_site))
        if missing:
            raise TransferError(f"no answer to the model_push task from {', '.join(missing)}")
        return need_by_site


def push_folder(
    controller: Controller,
    fl_ctx: FLContext,
    abort_signal: Signal,
    path: Path,
    model_name: str = "",
    chunk_size: int = chunk_size_from_mb(DEFAULT_CHUNK_MB),
    targets: Optional[List[str]] = None,
    task_name: str = P.TASK_NAME,
    prepare_timeout: int = 600,
    max_retries: int = 3,
    chunk_timeout: float = 300.0,
    slice_mb: float = DEFAULT_SLICE_MB,
    streams: int = DEFAULT_STREAMS,
    manifest: Optional[Manifest] = None,
    fault_fn: Optional[FaultFn] = None,
) -> dict:
    """Push ``path`` to ``targets`` (default: every client) from any controller's ``control_flow``.

    Hashes the folder (unless ``manifest``, its manifest, is given), sends the ``task_name`` task so each site
    says what it still needs, then streams exactly that. ``fault_fn`` rewrites each chunk's bytes before they
    are sent (the fault-injection tests' corrupting controller passes one). Returns the push report; raises
    TransferError naming the site or file on failure.
    """
    started = time.time()
    controller.log_info(fl_ctx, f"model_push: hashing {path} in {chunk_size / (1 << 20):g} MiB chunks")
    manifest = manifest or build_manifest(path, chunk_size, model_name=model_name)
    hashed = time.time()
    targets = targets or [c.name for c in fl_ctx.get_engine().get_clients()]
    push_id = str(uuid.uuid4())
    task = Task(
        name=task_name,
        data=Shareable({P.KEY_PUSH_ID: push_id, P.KEY_MANIFEST: manifest.to_dict()}),
        timeout=int(prepare_timeout),
    )
    controller.broadcast_and_wait(task, fl_ctx, targets=targets, min_responses=len(targets),
                                  abort_signal=abort_signal)
    need_by_site = ModelPushController._needs(task.client_tasks, targets)
    prepared = time.time()
    if abort_signal.triggered:
        raise TransferError("model_push aborted")
    controller.log_info(
        fl_ctx, f"model_push: sending {manifest.model_name} ({manifest.total_bytes} bytes) to {', '.join(targets)}"
    )
    sites = stream_model_folder(
        fl_ctx,
        path,
        manifest,
        targets,
        need_by_site=need_by_site,
        max_retries=max_retries,
        chunk_timeout=chunk_timeout,
        slice_mb=slice_mb,
        streams=streams,
        fault_fn=fault_fn,
        push_id=push_id,
    )
    stream_seconds = time.time() - prepared
    controller.log_info(
        fl_ctx,
        f"model_push: done, {manifest.total_bytes / 1e6:.0f} MB in {time.time() - started:.1f}s "
        f"({manifest.total_bytes / 1e6 / max(stream_seconds, 1e-6):.0f} MB/s streaming)",
    )
    return {
        "model_name": manifest.model_name,
        "total_bytes": manifest.total_bytes,
        "file_sha256": manifest.sha256_by_file,
        "hash_seconds": hashed - started,
        "prepare_seconds": prepared - hashed,
        "stream_seconds": stream_seconds,
        "sites": sites,
        "need_chunks": {s: sum(len(v) for v in n.values()) for s, n in need_by_site.items()},
    }
