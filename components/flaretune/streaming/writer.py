"""Receiving side, pure: chunks go straight to ``<dest>.partial``; the file is published only after its sha256 matches.

A chunk (the unit of checksum, retry and resume) may arrive as several slices (the unit of one message, so
a process never holds more than a slice however large the chunk): slices are written as they come and
hashed into the chunk's running sha256; the chunk counts as received only when that matches.

Resume bookkeeping lives in a small JSON sidecar (``<dest>.partial.json``) listing the chunks written so far.
On restart the listed chunks are re-read and re-hashed against the manifest (the sidecar is not trusted: it is
written without fsync), so an interrupted transfer asks only for what is missing. Memory stays at one chunk:
chunks are written with ``os.pwrite`` as they arrive and the whole-file hash is built incrementally.
"""

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from flaretune.errors import FlaretuneError
from flaretune.streaming.chunks import (
    HASH_BLOCK,
    PARTIAL_SUFFIX,
    Chunk,
    FileEntry,
    Manifest,
    file_sha256,
    plan_chunks,
    read_chunk,
    sha256_bytes,
)


class ChecksumError(FlaretuneError):
    """A received file's sha256 does not match the sender's; the file was not published."""


@dataclass
class ChunkOutcome:
    ok: bool
    reason: str = ""
    published: Optional[str] = None  # path of the file, when this chunk completed and published it


class FileWriter:
    """One file of a transfer: temp file + sidecar, chunk checks, incremental hash, atomic publish."""

    def __init__(self, dest_dir, entry: FileEntry, chunk_size: int):
        self.entry = entry
        self.chunk_size = chunk_size
        self.chunks = plan_chunks(entry.size, chunk_size)
        if len(self.chunks) != entry.num_chunks:
            raise ValueError(
                f"{entry.name}: manifest lists {entry.num_chunks} chunk hashes, expected {len(self.chunks)}"
            )
        self.path = Path(dest_dir) / entry.name
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.sidecar = self.partial.with_name(self.partial.name + ".json")
        self.received = set()
        self.published = False
        self._fd: Optional[int] = None
        self._hasher = hashlib.sha256()
        self._hashed_chunks = 0  # chunks [0, n) are in self._hasher
        self._pending: Dict[int, list] = {}  # chunk index -> [running sha256, next file offset expected]
        self._lock = threading.RLock()  # several streams may write different chunks of one file
        self._resume()

    # ---- resume -------------------------------------------------------------------------------
    def _resume(self):
        if self.path.is_file() and self.path.stat().st_size == self.entry.size:
            if file_sha256(self.path) == self.entry.sha256:  # already here from an earlier push
                self.published = True
                self.received = set(range(len(self.chunks)))
                return
        state = self._read_sidecar()
        if state and self.partial.is_file() and self.partial.stat().st_size == self.entry.size:
            fd = os.open(self.partial, os.O_RDONLY)
            try:
                for index in state.get("received", []):
                    if 0 <= index < len(self.chunks):
                        data = read_chunk(fd, self.chunks[index])
                        if sha256_bytes(data) == self.entry.chunk_sha256[index]:
                            self.received.add(index)
            finally:
                os.close(fd)
        else:
            self._discard()

    def _read_sidecar(self) -> Optional[dict]:
        try:
            state = json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return None
        same = (state.get("size"), state.get("sha256"), state.get("chunk_size")) == (
            self.entry.size,
            self.entry.sha256,
            self.chunk_size,
        )
        return state if same else None

    def _write_sidecar(self):
        state = {
            "name": self.entry.name,
            "size": self.entry.size,
            "sha256": self.entry.sha256,
            "chunk_size": self.chunk_size,
            "received": sorted(self.received),
        }
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.sidecar)

    def _discard(self):
        for p in (self.partial, self.sidecar):
            if p.exists():
                p.unlink()

    # ---- receive ------------------------------------------------------------------------------
    def missing(self) -> List[int]:
        return [c.index for c in self.chunks if c.index not in self.received]

    @property
    def done(self) -> bool:
        return len(self.received) == len(self.chunks)

    def write(self, index: int, data, sha256: str) -> ChunkOutcome:
        """A whole chunk in one piece (see ``write_slice``)."""
        offset = self.chunks[index].offset if 0 <= index < len(self.chunks) else -1
        return self.write_slice(index, offset, data, sha256, last=True)

    def write_slice(self, index: int, offset: int, data, sha256: str, last: bool) -> ChunkOutcome:
        """Write one slice of chunk ``index`` at file ``offset``; on the chunk's last slice check its sha256.

        A chunk restarts whenever its first slice comes again (a resend); a slice out of order, a wrong size
        or a sha256 mismatch refuses the chunk (``ok=False``) and the sender resends all of it.
        """
        name = self.entry.name
        if not 0 <= index < len(self.chunks):
            return ChunkOutcome(False, f"{name}: chunk index {index} out of range 0..{len(self.chunks) - 1}")
        chunk = self.chunks[index]
        with self._lock:
            if self.published or index in self.received:
                return ChunkOutcome(True)  # a duplicate (resend to another site, resume): already have it
            state = self._pending.get(index)
            if offset == chunk.offset:
                state = self._pending[index] = [hashlib.sha256(), chunk.offset]
            if state is None or offset != state[1] or offset + len(data) > chunk.offset + chunk.length:
                self._pending.pop(index, None)
                return ChunkOutcome(False, f"{name}: chunk {index}: slice at offset {offset} out of order")
            fd = self._open()
        view, written = memoryview(data), 0
        while written < len(view):
            written += os.pwrite(fd, view[written:], offset + written)
        state[0].update(data)
        state[1] = offset + len(data)
        if not last:
            return ChunkOutcome(True)
        with self._lock:
            self._pending.pop(index, None)
            end = chunk.offset + chunk.length
            if state[1] != end:
                return ChunkOutcome(False, f"{name}: chunk {index} ended at {state[1]}, expected {end}")
            got = state[0].hexdigest()
            if got != sha256 or got != self.entry.chunk_sha256[index]:
                return ChunkOutcome(False, f"{name}: chunk {index} (offset {chunk.offset}) failed sha256")
            self.received.add(index)
            self._write_sidecar()
            self._catch_up_hash(fd)
        return ChunkOutcome(True)

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.partial, os.O_RDWR | os.O_CREAT, 0o644)
            if os.fstat(self._fd).st_size != self.entry.size:
                os.ftruncate(self._fd, self.entry.size)
        return self._fd

    def _catch_up_hash(self, fd: int):
        """Hash chunks that arrived out of order (resume, retries) by reading them back from the temp file."""
        while self._hashed_chunks < len(self.chunks) and self._hashed_chunks in self.received:
            chunk = self.chunks[self._hashed_chunks]
            for off in range(chunk.offset, chunk.offset + chunk.length, HASH_BLOCK):
                n = min(HASH_BLOCK, chunk.offset + chunk.length - off)
                self._hasher.update(read_chunk(fd, Chunk(0, off, n)))
            self._hashed_chunks += 1

    def publish(self) -> str:
        """Whole-file sha256, then atomic ``os.replace`` into place. On mismatch nothing is published."""
        with self._lock:
            return self._publish()

    def _publish(self) -> str:
        if self.published:
            return str(self.path)
        if not self.done:
            raise ChecksumError(f"{self.entry.name}: {len(self.missing())} chunk(s) missing; not published")
        fd = self._open()
        self._catch_up_hash(fd)
        got = self._hasher.hexdigest()
        if got != self.entry.sha256:
            self.close()
            self._discard()  # every chunk matched but the whole does not: start this file over next time
            raise ChecksumError(
                f"{self.entry.name}: sha256 of the received file is {got[:12]}…, "
                f"expected {self.entry.sha256[:12]}…; file not published"
            )
        os.fsync(fd)
        self.close()
        os.replace(self.partial, self.path)
        if self.sidecar.exists():
            self.sidecar.unlink()
        self.published = True
        return str(self.path)

    def close(self):
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class TransferReceiver:
    """All files of one manifest into ``dest_dir``; each file is published when its last chunk lands."""

    def __init__(self, dest_dir, manifest: Manifest):
        self.dest_dir = Path(dest_dir)
        self.manifest = manifest
        self.writers: Dict[str, FileWriter] = {
            f.name: FileWriter(self.dest_dir, f, manifest.chunk_size) for f in manifest.files
        }

    def need(self) -> Dict[str, List[int]]:
        return {name: w.missing() for name, w in self.writers.items() if w.missing()}

    def accept(self, name: str, index: int, data, sha256: str, offset: Optional[int] = None, last: bool = True):
        """Write one chunk (or one slice of it, from file ``offset``); publish the file once it is complete.

        Raises ChecksumError naming the file when the complete file does not match its sha256.
        """
        writer = self.writers.get(name)
        if writer is None:
            return ChunkOutcome(False, f"{name}: not in the manifest")
        if offset is None:
            outcome = writer.write(index, data, sha256)
        else:
            outcome = writer.write_slice(index, offset, data, sha256, last)
        if outcome.ok and last:
            with writer._lock:
                if writer.done and not writer.published:
                    outcome.published = writer.publish()
        return outcome

    @property
    def published(self) -> List[str]:
        return [name for name, w in self.writers.items() if w.published]

    @property
    def complete(self) -> bool:
        return all(w.published for w in self.writers.values())

    def close(self):
        for w in self.writers.values():
            w.close()
