"""Site side of ``model_push``: receive a streamed model into a site-local folder.

``ModelPushReceiver`` (an Executor for the ``model_push`` task) answers the server's prepare request with
the chunks it still needs (resume), then the stream writes into ``<dest_dir>/<model_name>/``. A relative
``dest_dir`` is under the site's workspace root, so a model received once survives the job and is not sent
again. ``ModelFolderReceiver`` is the same receiving end without the task, e.g. on the server for full-model
updates that clients send with :func:`flaretune.streaming.producer.stream_model_folder`.
"""

from nvflare.apis.event_type import EventType
from nvflare.apis.executor import Executor
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import ReturnCode, Shareable, make_reply
from nvflare.apis.signal import Signal

from flaretune.errors import ConfigError
from flaretune.paths import resolve_site_dir
from flaretune.streaming import protocol as P
from flaretune.streaming.memory import pin_mmap_threshold
from flaretune.streaming.chunks import Manifest
from flaretune.streaming.consumer import register_model_receiver
from flaretune.streaming.writer import TransferReceiver


def _check_dest_dir(dest_dir) -> None:
    if not isinstance(dest_dir, str) or not dest_dir:
        raise ConfigError(f"dest_dir must be a non-empty folder path, got {dest_dir!r}")


def _stream_done(stream_ctx, fl_ctx: FLContext, **kwargs):
    result = stream_ctx.get(P.KEY_RESULT) or {}
    if result.get("complete"):
        fl_ctx.set_prop(P.PUSHED_MODEL_DIR, result["dest"], private=False, sticky=True)


class ModelFolderReceiver(FLComponent):
    def __init__(self, dest_dir: str = "models"):
        """Receive model folders streamed to this process.

        Args:
            dest_dir: where models land, as ``<dest_dir>/<model_name>/``; relative to the site workspace root.
        """
        super().__init__()
        _check_dest_dir(dest_dir)
        self.dest_dir = dest_dir

    def handle_event(self, event_type: str, fl_ctx: FLContext):
        if event_type == EventType.START_RUN:
            register_model_receiver(fl_ctx, resolve_site_dir(self.dest_dir, fl_ctx), stream_done_cb=_stream_done)


class ModelPushReceiver(Executor):
    def __init__(self, dest_dir: str = "models", task_name: str = P.TASK_NAME):
        """Executor for the ``model_push`` task (see ``ModelPushController``).

        Args:
            dest_dir: where models land, as ``<dest_dir>/<model_name>/``; relative to the site workspace root.
            task_name: must match the controller's ``task_name``.
        """
        super().__init__()
        _check_dest_dir(dest_dir)
        if not isinstance(task_name, str) or not task_name:
            raise ConfigError(f"task_name must be a non-empty string, got {task_name!r}")
        self.dest_dir = dest_dir
        self.task_name = task_name
        self._prepared = {}  # push id -> TransferReceiver, handed to the stream's consumer
        pin_mmap_threshold()  # this job process moves GBs in 1-8 MiB buffers: keep its RSS flat

    def handle_event(self, event_type: str, fl_ctx: FLContext):
        if event_type == EventType.START_RUN:
            register_model_receiver(
                fl_ctx, resolve_site_dir(self.dest_dir, fl_ctx), receivers=self._prepared, stream_done_cb=_stream_done
            )
        elif event_type == EventType.END_RUN:
            for receiver in self._prepared.values():
                receiver.close()
            self._prepared.clear()

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        if task_name != self.task_name:
            self.log_error(fl_ctx, f"ModelPushReceiver got task {task_name!r}; it handles {self.task_name!r}")
            return make_reply(ReturnCode.TASK_UNKNOWN)
        try:
            manifest = Manifest.from_dict(shareable[P.KEY_MANIFEST])
            dest = resolve_site_dir(self.dest_dir, fl_ctx) / manifest.model_name
            receiver = TransferReceiver(dest, manifest)  # resumes from earlier partial files
        except Exception as err:
            self.log_error(fl_ctx, f"model push: cannot prepare to receive: {err}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)
        self._prepared[shareable[P.KEY_PUSH_ID]] = receiver
        need = receiver.need()
        have = sum(w.entry.size for w in receiver.writers.values()) - sum(
            receiver.writers[n].chunks[i].length for n, idx in need.items() for i in idx
        )
        self.log_info(
            fl_ctx, f"model push: ready to receive {manifest.model_name} into {dest} ({have} bytes already here)"
        )
        reply = make_reply(ReturnCode.OK)
        reply[P.KEY_NEED] = need
        reply[P.KEY_DEST] = str(dest)
        return reply
