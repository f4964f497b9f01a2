"""Sending side on FLARE: ``ObjectProducer``s that read one slice at a time and broadcast it.

Thin glue over :mod:`flaretune.streaming.schedule` (what to send, retries) and
:mod:`flaretune.streaming.chunks` (``os.pread`` of one slice). A chunk (checksum/retry/resume unit) goes
out as slices of at most ``slice_size`` bytes, one message each, so no process ever holds a whole chunk.
``streams`` producers pull chunks from one scheduler in parallel so reading, sending and writing overlap;
a last stream carries only ``done`` and collects each receiver's summary.

A slice travels as a uint8 numpy array, so FLARE's FOBS sends only a reference in the stream message and
the receiver pulls the bytes through FLARE's download service. Sending the bytes inline in the message was
about half as fast: FLARE 2.9's stream cell formats every incoming payload into a debug log string
(``cell.py``, ``Adapter.call``) even when debug logging is off, which costs about 30 ms per MiB.

Works in either direction: the server pushes to clients, or a client sends a full-model update to
``["server"]``.
"""

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import ReturnCode, Shareable
from nvflare.apis.streaming import ObjectProducer, StreamableEngine
from nvflare.fuel.utils.log_utils import get_obj_logger

from flaretune.streaming import protocol as P
from flaretune.streaming.chunks import Chunk, MiB, Manifest, need_all, read_chunk
from flaretune.streaming.memory import GcThrottle
from flaretune.streaming.schedule import ChunkScheduler, FaultFn, Reply, TransferError

DEFAULT_SLICE_MB = 32
DEFAULT_STREAMS = 2


def parse_replies(targets: List[str], replies: Dict[str, Shareable]) -> Dict[str, Reply]:
    result = {}
    for site in targets:
        reply = replies.get(site)
        rc = reply.get_return_code(ReturnCode.OK) if isinstance(reply, Shareable) else "NO_REPLY"
        if rc != ReturnCode.OK:
            result[site] = Reply(P.STATUS_LOST, f"no reply ({rc})")
        else:
            result[site] = Reply(reply.get(P.KEY_STATUS, P.STATUS_NACK), reply.get(P.KEY_REASON, ""))
    return result


class ModelChunkProducer(ObjectProducer):
    """One stream: takes chunks from the shared scheduler and sends each as consecutive slices."""

    def __init__(self, base_dir: Path, scheduler: ChunkScheduler, targets: List[str], slice_size: int,
                 chunk_timeout: float, fault_fn: Optional[FaultFn] = None, progress=None):
        self.base_dir = base_dir
        self.scheduler = scheduler
        self.targets = list(targets)
        self.slice_size = slice_size
        self.chunk_timeout = float(chunk_timeout)
        self.fault_fn = fault_fn
        self.progress = progress
        self._fds: Dict[str, int] = {}
        self._item = None  # (entry, chunk) being sent
        self._pos = 0  # file offset of the next slice of it

    def _fd(self, entry) -> int:
        if entry.name not in self._fds:
            fd = os.open(self.base_dir / entry.name, os.O_RDONLY)
            st = os.fstat(fd)
            if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
                os.close(fd)
                raise TransferError(f"{entry.name} changed on disk after it was hashed; not sending it")
            self._fds[entry.name] = fd
        return self._fds[entry.name]

    def produce(self, stream_ctx, fl_ctx: FLContext):
        if self._item is None:
            self._item = self.scheduler.next()
            if self._item is None:
                return None, self.chunk_timeout  # this stream is done
            self._pos = self._item[1].offset
        entry, chunk = self._item
        attempt = self.scheduler.attempts[(entry.name, chunk.index)]
        n = min(self.slice_size, chunk.offset + chunk.length - self._pos)
        data = read_chunk(self._fd(entry), Chunk(chunk.index, self._pos, n))
        if self.fault_fn and self._pos == chunk.offset:
            data = self.fault_fn(entry.name, chunk.index, attempt, data)
        msg = Shareable()
        msg.update({
            P.KEY_KIND: P.KIND_CHUNK,
            P.KEY_FILE: entry.name,
            P.KEY_INDEX: chunk.index,
            P.KEY_OFFSET: chunk.offset,
            P.KEY_LENGTH: chunk.length,
            P.KEY_CHUNK_SHA: entry.chunk_sha256[chunk.index],
            P.KEY_FILE_SIZE: entry.size,
            P.KEY_FILE_SHA: entry.sha256,
            P.KEY_SLICE_OFFSET: self._pos,
            P.KEY_LAST: self._pos + n == chunk.offset + chunk.length,
            P.KEY_DATA: np.frombuffer(data, dtype=np.uint8),  # pulled through FLARE's download service
        })
        self._pos += n
        return msg, self.chunk_timeout

    def process_replies(self, replies, stream_ctx, fl_ctx: FLContext):
        entry, chunk = self._item
        parsed = parse_replies(self.targets, replies)
        chunk_end = self._pos >= chunk.offset + chunk.length
        if not chunk_end and all(r.status == P.STATUS_OK for r in parsed.values()):
            return None  # next slice of the same chunk
        self._item = None  # chunk finished, refused or lost: the scheduler decides what comes next
        try:
            self.scheduler.record(entry.name, chunk.index, parsed)
        except TransferError:
            return False
        if self.progress:
            self.progress()
        return None

    def close(self):
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class _DoneProducer(ObjectProducer):
    """The last stream: one ``done`` message; each receiver answers with what it published."""

    def __init__(self, targets: List[str], timeout: float):
        self.targets, self.timeout = targets, float(timeout)
        self.results: Dict[str, dict] = {}
        self.error: Optional[str] = None
        self._sent = False

    def produce(self, stream_ctx, fl_ctx):
        if self._sent:
            return None, self.timeout
        self._sent = True
        return Shareable({P.KEY_KIND: P.KIND_DONE}), self.timeout

    def process_replies(self, replies, stream_ctx, fl_ctx):
        for site, r in sorted(parse_replies(self.targets, replies).items()):
            if r.status != P.STATUS_OK:
                self.error = self.error or f"model push to {site} did not complete: {r.reason or r.status}"
            else:
                self.results[site] = {"published": list(replies[site].get(P.KEY_PUBLISHED, []))}
        return False if self.error else dict(self.results)


class _Progress:
    def __init__(self, scheduler: ChunkScheduler, logger):
        self.scheduler, self.logger = scheduler, logger
        self.started, self.last = time.time(), 0.0
        self.lock = threading.Lock()
        self.collect = GcThrottle()

    def __call__(self):
        self.collect()
        s, now = self.scheduler, time.time()
        with self.lock:
            if now - self.last < 5.0 and s.sent_bytes < s.total_bytes:
                return
            self.last = now
        pct = 100.0 * s.sent_bytes / s.total_bytes if s.total_bytes else 100.0
        rate = s.sent_bytes / 1e6 / max(now - self.started, 1e-6)
        self.logger.info(
            f"model push: {s.sent_bytes / 1e6:.0f}/{s.total_bytes / 1e6:.0f} MB ({pct:.0f}%), "
            f"{rate:.0f} MB/s, {s.retries} chunk resends"
        )


def stream_model_folder(
    fl_ctx: FLContext,
    model_dir,
    manifest: Manifest,
    targets: List[str],
    need_by_site: Optional[Dict[str, Dict[str, List[int]]]] = None,
    max_retries: int = 3,
    chunk_timeout: float = 300.0,
    slice_mb: float = DEFAULT_SLICE_MB,
    streams: int = DEFAULT_STREAMS,
    fault_fn: Optional[FaultFn] = None,
    push_id: str = "",
    channel: str = P.CHANNEL,
    topic: str = P.TOPIC,
) -> Dict[str, dict]:
    """Stream ``model_dir`` (described by ``manifest``) to ``targets``; returns per-site results.

    ``need_by_site`` (from a prepare step) limits what is sent; without it every chunk goes out. Raises
    TransferError with a message naming the site and the file when the push cannot complete.
    """
    engine = fl_ctx.get_engine()
    if not isinstance(engine, StreamableEngine):
        raise RuntimeError(f"engine must be a StreamableEngine, got {type(engine)}")
    model_dir = Path(model_dir)
    base_dir = model_dir.parent if model_dir.is_file() else model_dir
    need_by_site = need_by_site if need_by_site is not None else {t: need_all(manifest) for t in targets}
    scheduler = ChunkScheduler(manifest, need_by_site, max_retries=max_retries)
    slice_size = min(manifest.chunk_size, max(1, int(slice_mb * MiB)))
    progress = _Progress(scheduler, get_obj_logger(ModelChunkProducer))
    stream_ctx = {P.KEY_PUSH_ID: push_id or str(uuid.uuid4()), P.KEY_MANIFEST: manifest.to_dict()}

    def run_stream(producer: ObjectProducer):
        try:
            with engine.new_context() as ctx:
                result = engine.stream_objects(channel=channel, topic=topic, stream_ctx=dict(stream_ctx),
                                               targets=targets, producer=producer, fl_ctx=ctx)
            if isinstance(producer, ModelChunkProducer) and result and result[0] != ReturnCode.OK:
                scheduler.abort(f"model push stream ended with {result[0]}")  # aborted run, or a failed chunk
            return result
        except Exception as err:  # the producer's TransferError, or FLARE's own
            scheduler.abort(str(err) if isinstance(err, TransferError) else f"stream failed: {err!r}")
        finally:
            if isinstance(producer, ModelChunkProducer):
                producer.close()

    producers = [ModelChunkProducer(base_dir, scheduler, targets, slice_size, chunk_timeout, fault_fn, progress)
                 for _ in range(max(1, int(streams)))]
    threads = [threading.Thread(target=run_stream, args=(p,), daemon=True) for p in producers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if scheduler.error:
        raise TransferError(scheduler.error)
    done = _DoneProducer(targets, chunk_timeout)
    result = run_stream(done)
    if done.error or scheduler.error:
        raise TransferError(done.error or scheduler.error)
    rc, sites = result if result else (None, None)
    if rc != ReturnCode.OK or not sites:
        raise TransferError(f"model push to {', '.join(targets)} ended with {rc}")
    return sites
