"""Site side of :class:`flaretune.streaming.fedavg.StreamedFedAvg`: full fine-tuning of a token classifier.

``model_push`` is handled as by :class:`ModelPushReceiver` (resumable, bounded memory). ``train`` loads the
pushed Hugging Face folder, fine-tunes every parameter on the site's NER data (the same local round as
every executor: :func:`flaretune.train.flow.local_round`), saves the result as
safetensors and streams that folder back to the server on the ``model_update`` topic, then answers with
the update's name, checksums, example count and scores. The received and the trained folders are deleted
once the server has the update, so a site keeps at most two copies of the model on disk.
"""

import shutil
import tempfile
import time
from pathlib import Path

from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import ReturnCode, Shareable, make_reply
from nvflare.apis.signal import Signal

from flaretune.errors import ConfigError, FlaretuneError
from flaretune.streaming import protocol as P
from flaretune.streaming.chunks import DEFAULT_CHUNK_MB, build_manifest, chunk_size_from_mb
from flaretune.streaming.producer import stream_model_folder
from flaretune.paths import resolve_site_dir
from flaretune.streaming.receiver import ModelPushReceiver
from flaretune.streaming.schedule import TransferError
from flaretune.train.flow import LocalTraining, local_round, round_line


class FullModelTrainExecutor(ModelPushReceiver):
    def __init__(
        self,
        dest_dir: str = "models",
        data_path: str = "",
        local_epochs: float = 1.0,
        max_steps: int = 0,
        learning_rate: float = 5e-5,
        batch_size: int = 16,
        max_length: int = 64,
        seed: int = 0,
        synthetic_sites: int = 3,
        synthetic_skew: float = 0.8,
        synthetic_train_size: int = 0,
        num_threads: int = 0,
        chunk_mb: float = DEFAULT_CHUNK_MB,
        task_name: str = P.TASK_NAME,
        train_task_name: str = "train",
    ):
        """Full fine-tuning of the pushed model on this site's NER data (CoNLL files or a synthetic hospital).

        Args:
            dest_dir: where pushed models land (see ``ModelPushReceiver``).
            data_path: the site's CoNLL file or folder; else ``$FLARETUNE_DATA_DIR/<site>``; else synthetic.
            local_epochs / max_steps / learning_rate / batch_size / max_length / seed: local training.
            synthetic_*: the synthetic hospital used when no data is configured.
            num_threads: torch threads (0 keeps torch's default).
            chunk_mb: chunk size of the update stream to the server, in (0, 1024].
            task_name: the ``model_push`` task name; train_task_name: the ``train`` task name.
        """
        super().__init__(dest_dir=dest_dir, task_name=task_name)
        self.data_path = data_path
        self.local_epochs = local_epochs
        self.max_steps = max_steps
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed = seed
        self.synthetic_sites = synthetic_sites
        self.synthetic_skew = synthetic_skew
        self.synthetic_train_size = synthetic_train_size
        self.num_threads = num_threads
        self.chunk_mb = chunk_mb
        self.train_task_name = train_task_name
        self._chunk_size = chunk_size_from_mb(chunk_mb)
        self._settings = LocalTraining(epochs=local_epochs, max_steps=max_steps, learning_rate=learning_rate,
                                       batch_size=batch_size)
        self._data = None

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        if task_name != self.train_task_name:
            return super().execute(task_name, shareable, fl_ctx, abort_signal)
        try:
            return self._train(shareable, fl_ctx, abort_signal)
        except (FlaretuneError, TransferError) as err:
            self.log_error(fl_ctx, f"{task_name}: {err}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)

    def _train(self, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        from flaretune.data.site import load_site_ner_data
        from flaretune.train.full_trainer import FullNerTrainer

        received_at = time.time()
        site = fl_ctx.get_identity_name()
        model_name, r = shareable.get(P.KEY_MODEL_NAME), int(shareable.get(P.KEY_ROUND, 0))
        folder = resolve_site_dir(self.dest_dir, fl_ctx) / str(model_name)
        if not model_name or not folder.is_dir():
            raise ConfigError(f"train: model {model_name!r} was not pushed to this site (looked in {folder})")
        if self._data is None:
            self._data = load_site_ner_data(
                site, self.data_path, seed=self.seed, synthetic_sites=self.synthetic_sites,
                synthetic_skew=self.synthetic_skew, synthetic_train_size=self.synthetic_train_size,
            )
        trainer = FullNerTrainer(folder, max_length=self.max_length, num_threads=self.num_threads)
        train, test = trainer.encode(self._data.train), trainer.encode(self._data.test)
        outcome = local_round(trainer, train, test, self._settings, seed=self.seed + r,
                              should_stop=lambda: abort_signal.triggered)
        if outcome.result.aborted:
            return make_reply(ReturnCode.TASK_ABORTED)
        metrics = {"global_f1": outcome.before["f1"], "local_f1": outcome.after["f1"],
                   "train_loss": outcome.result.mean_loss, **outcome.timing(received_at)}
        update_name = f"{site}-round-{r}"
        with tempfile.TemporaryDirectory(prefix="update-", dir=folder.parent) as tmp:
            out = trainer.save(Path(tmp) / update_name)
            del trainer
            manifest = build_manifest(out, self._chunk_size, model_name=update_name)
            self.log_info(fl_ctx, round_line(site, r, outcome, ("f1",), manifest.total_bytes))
            stream_model_folder(fl_ctx, out, manifest, ["server"], max_retries=3, topic=P.UPDATE_TOPIC)
        shutil.rmtree(folder, ignore_errors=True)  # the next round pushes a new global model
        reply = make_reply(ReturnCode.OK)
        reply[P.KEY_UPDATE] = {"model_name": update_name, "total_bytes": manifest.total_bytes,
                               "file_sha256": manifest.sha256_by_file}
        reply[P.KEY_NUM_EXAMPLES] = len(train)
        reply[P.KEY_METRICS] = metrics
        return reply
