"""Receiving side on FLARE: an ``ObjectConsumer`` that writes each chunk straight to disk.

Thin glue over :class:`flaretune.streaming.writer.TransferReceiver`. A refused chunk is answered with ``nack``
(the sender resends it); a file whose whole-file sha256 fails is answered with ``fail`` and never published.
The consumer never raises for bad data: FLARE would end the stream session on an exception.
"""

import threading
from pathlib import Path
from typing import Callable, Dict, Optional

from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.apis.streaming import ConsumerFactory, ObjectConsumer, StreamableEngine
from nvflare.fuel.utils.log_utils import get_obj_logger

from flaretune.streaming import protocol as P
from flaretune.streaming.chunks import Manifest
from flaretune.streaming.memory import GcThrottle
from flaretune.streaming.writer import ChecksumError, TransferReceiver


def _reply(status: str, reason: str = "", **extra) -> Shareable:
    reply = Shareable({P.KEY_STATUS: status, P.KEY_REASON: reason})
    reply.update(extra)
    return reply


class ModelChunkConsumer(ObjectConsumer):
    """One stream's consumer. Several streams of one push share the same ``TransferReceiver``."""

    def __init__(self, receiver: TransferReceiver, factory: "ModelConsumerFactory", push_id: str):
        self.receiver = receiver
        self.factory = factory
        self.push_id = push_id
        self.logger = get_obj_logger(self)

    def consume(self, shareable: Shareable, stream_ctx, fl_ctx: FLContext):
        kind = shareable.get(P.KEY_KIND)
        if kind == P.KIND_DONE:
            return False, self._done()
        if kind != P.KIND_CHUNK:
            return True, _reply(P.STATUS_FAIL, f"unknown message kind {kind!r}")
        name, index = shareable.get(P.KEY_FILE), shareable.get(P.KEY_INDEX)
        data = shareable.get(P.KEY_DATA)  # a uint8 array FLARE already downloaded, or bytes
        try:
            outcome = self.receiver.accept(
                name,
                index,
                b"" if data is None else data,
                shareable.get(P.KEY_CHUNK_SHA),
                offset=shareable.get(P.KEY_SLICE_OFFSET, shareable.get(P.KEY_OFFSET)),
                last=bool(shareable.get(P.KEY_LAST, True)),
            )
        except ChecksumError as err:
            return True, self._fail(str(err))
        except OSError as err:  # disk full, permissions: resending will not help
            return True, self._fail(f"{name}: cannot write chunk {index}: {err}")
        if shareable.get(P.KEY_LAST, True):
            self.factory.collect()
        if not outcome.ok:
            self.logger.warning(f"model push: refused {outcome.reason}; asking for it again")
            return True, _reply(P.STATUS_NACK, outcome.reason)
        if outcome.published:
            self.logger.info(f"model push: received and verified {outcome.published}")
        return True, _reply(P.STATUS_OK)

    def _fail(self, reason: str) -> Shareable:
        self.factory.failures.setdefault(self.push_id, reason)
        self.logger.error(f"model push: {reason}")
        return _reply(P.STATUS_FAIL, reason)

    def _done(self) -> Shareable:
        receiver = self.factory.release(self.push_id) or self.receiver
        failure = self.factory.failures.pop(self.push_id, None)
        if failure:
            return _reply(P.STATUS_FAIL, failure)
        if not receiver.complete:
            missing = ", ".join(sorted(receiver.need()))
            return _reply(P.STATUS_FAIL, f"stream ended with files still incomplete: {missing}")
        return _reply(P.STATUS_OK, **{P.KEY_PUBLISHED: receiver.published})

    def finalize(self, stream_ctx, fl_ctx: FLContext):
        stream_ctx[P.KEY_RESULT] = {
            "dest": str(self.receiver.dest_dir),
            "complete": self.receiver.complete,
            "published": self.receiver.published,
            "failure": self.factory.failures.get(self.push_id),
        }


class ModelConsumerFactory(ConsumerFactory):
    """A consumer per stream; all streams of one push (same push id) share one ``TransferReceiver``: the one
    the ``model_push`` task prepared (it already knows what is on disk), else one built from the manifest
    sent with the stream."""

    def __init__(self, dest_root, receivers: Optional[Dict[str, TransferReceiver]] = None):
        self.dest_root = Path(dest_root)
        self.receivers = receivers if receivers is not None else {}
        self.failures: Dict[str, str] = {}
        self.collect = GcThrottle()
        self._lock = threading.Lock()

    def get_consumer(self, stream_ctx, fl_ctx: FLContext) -> ObjectConsumer:
        push_id = stream_ctx.get(P.KEY_PUSH_ID)
        with self._lock:
            receiver = self.receivers.get(push_id)
            if receiver is None:
                manifest = Manifest.from_dict(stream_ctx[P.KEY_MANIFEST])
                receiver = self.receivers[push_id] = TransferReceiver(self.dest_root / manifest.model_name, manifest)
        return ModelChunkConsumer(receiver, self, push_id)

    def release(self, push_id: str) -> Optional[TransferReceiver]:
        with self._lock:
            receiver = self.receivers.pop(push_id, None)
        if receiver is not None:
            receiver.close()
        return receiver


def register_model_receiver(
    fl_ctx: FLContext,
    dest_root,
    receivers: Optional[Dict[str, TransferReceiver]] = None,
    stream_done_cb: Optional[Callable] = None,
    channel: str = P.CHANNEL,
    topic: str = P.TOPIC,
    **cb_kwargs,
) -> ModelConsumerFactory:
    """Register this process to receive model streams into ``dest_root/<model_name>``; call at START_RUN."""
    engine = fl_ctx.get_engine()
    if not isinstance(engine, StreamableEngine):
        raise RuntimeError(f"engine must be a StreamableEngine, got {type(engine)}")
    factory = ModelConsumerFactory(dest_root, receivers)
    engine.register_stream_processing(
        channel=channel, topic=topic, factory=factory, stream_done_cb=stream_done_cb, **cb_kwargs
    )
    return factory
