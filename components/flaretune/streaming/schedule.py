"""Sending side, pure: which chunk goes next, retries of refused or lost chunks.

Each stream goes to all receivers at once (each chunk is read from disk once and broadcast); several streams
may pull chunks from one scheduler so that reading, sending and writing overlap. A chunk is sent if any
receiver still needs it; receivers that already have it simply acknowledge. A chunk refused by any receiver
(sha256 mismatch) or lost (no reply) goes back to the front of the queue, up to ``max_retries`` times. A
lost chunk waits ``retry_delay`` seconds before its first resend, twice that before the next, and so on: a
connection that drops for a few seconds must not use up every retry at once.
"""

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from flaretune.errors import ConfigError, FlaretuneError
from flaretune.streaming.chunks import Chunk, FileEntry, Manifest


class TransferError(FlaretuneError):
    """The push could not complete; the message names the site and the file."""


@dataclass
class Reply:
    """What one receiver said about one chunk: ``ok``, ``nack`` (retry it) or ``fail`` (give up)."""

    status: str
    reason: str = ""


class ChunkScheduler:
    def __init__(self, manifest: Manifest, need_by_site: Dict[str, Dict[str, List[int]]], max_retries: int = 3,
                 retry_delay: float = 1.0):
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if isinstance(retry_delay, bool) or not isinstance(retry_delay, (int, float)) or retry_delay < 0:
            raise ConfigError(f"retry_delay must be a number of seconds >= 0, got {retry_delay!r}")
        self.manifest = manifest
        self.max_retries = max_retries
        self.retry_delay = float(retry_delay)
        self._not_before: Dict[Tuple[str, int], float] = {}  # lost chunks: no resend before this time
        wanted = set()
        for need in need_by_site.values():
            for name, indices in need.items():
                wanted.update((name, i) for i in indices)
        self._entries = {f.name: f for f in manifest.files}
        order = {f.name: k for k, f in enumerate(manifest.files)}
        self._queue: deque = deque(sorted(wanted, key=lambda item: (order[item[0]], item[1])))
        self._chunks = {f.name: f.chunks(manifest.chunk_size) for f in manifest.files}
        self.attempts: Dict[Tuple[str, int], int] = {}
        self.total_bytes = sum(self._chunks[n][i].length for n, i in self._queue)
        self.sent_bytes = 0  # first sends only: progress, not wire traffic
        self.retries = 0
        self.error: Optional[str] = None
        self._in_flight = 0
        self._cond = threading.Condition()

    def next(self) -> Optional[Tuple[FileEntry, Chunk]]:
        """The next chunk to send; None once every needed chunk was acknowledged (or the push failed).

        Blocks while the queue is empty but chunks are still in flight on other streams: one of them may
        come back for a resend.
        """
        with self._cond:
            while not self._queue and self._in_flight and not self.error:
                self._cond.wait(1.0)
            if not self._queue or self.error:
                return None
            key = self._queue.popleft()
            self._in_flight += 1
            while not self.error and time.monotonic() < self._not_before.get(key, 0.0):
                self._cond.wait(self._not_before[key] - time.monotonic())
            if self.error:
                self._in_flight -= 1
                return None
            self.attempts[key] = self.attempts.get(key, 0) + 1
            chunk = self._chunks[key[0]][key[1]]
            if self.attempts[key] == 1:
                self.sent_bytes += chunk.length
            return self._entries[key[0]], chunk

    def record(self, name: str, index: int, replies: Dict[str, Reply]):
        """Act on the receivers' verdicts on chunk ``index`` of file ``name``; raises TransferError to stop."""
        key = (name, index)
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()
            try:
                self._record(key, replies)
            except TransferError as err:
                self.error = self.error or str(err)
                raise

    def _record(self, key: Tuple[str, int], replies: Dict[str, Reply]):
        name, index = key
        failed = {site: r for site, r in replies.items() if r.status == "fail"}
        if failed:
            site, r = sorted(failed.items())[0]
            raise TransferError(f"model push to {site} failed on file {name}: {_strip(r.reason, name)}")
        refused = {site: r for site, r in replies.items() if r.status != "ok"}
        if not refused:
            return
        tries = self.attempts[key]
        site, r = sorted(refused.items())[0]
        if tries > self.max_retries:
            raise TransferError(
                f"model push to {site} failed on file {name}: chunk {index} still refused after {tries} attempts "
                f"({_strip(r.reason, name) or r.status}); the file was not published"
            )
        self.retries += 1
        if any(r.status == "lost" for r in refused.values()):
            self._not_before[key] = time.monotonic() + self.retry_delay * 2 ** (tries - 1)
        self._queue.appendleft(key)

    def abort(self, reason: str):
        with self._cond:
            self.error = self.error or reason
            self._cond.notify_all()


def _strip(reason: str, name: str) -> str:
    return reason[len(name) + 2 :] if reason.startswith(name + ": ") else reason


# ---- the seam the fault-injection tests use ----------------------------------------------------------
FaultFn = Callable[[str, int, int, bytes], bytes]  # (file name, chunk index, attempt, data) -> data to send
