"""Chunk planning and sha256 over model files: pure, no FLARE.

A transfer is described by a :class:`Manifest`: for every file of a model folder its relative name, size,
whole-file sha256 and one sha256 per chunk. The sender computes it in one streaming pass (bounded memory:
one ``HASH_BLOCK`` buffer); the receiver checks each chunk against it as it lands and the whole file
before publishing it.
"""

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Dict, List, Union

from flaretune.errors import ConfigError

MiB = 1 << 20
DEFAULT_CHUNK_MB = 64
MAX_CHUNK_BYTES = 1 << 30  # one chunk travels as one message: keep it well under what a site can hold
HASH_BLOCK = 8 * MiB
PARTIAL_SUFFIX = ".partial"


def chunk_size_from_mb(chunk_mb: float, field_name: str = "chunk_mb") -> int:
    """MiB (float allowed, so tests can use 64 KiB chunks) -> bytes; ConfigError outside (0, 1 GiB]."""
    if isinstance(chunk_mb, bool) or not isinstance(chunk_mb, (int, float)):
        raise ConfigError(f"{field_name} must be a number of MiB in (0, 1024], got {chunk_mb!r}")
    return validate_chunk_size(int(chunk_mb * MiB), field_name=field_name, shown=f"{chunk_mb} MiB")


def validate_chunk_size(chunk_size: int, field_name: str = "chunk_size", shown: str = "") -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not 0 < chunk_size <= MAX_CHUNK_BYTES:
        raise ConfigError(
            f"{field_name} must be > 0 and at most 1 GiB ({MAX_CHUNK_BYTES} bytes), got {shown or repr(chunk_size)}"
        )
    return chunk_size


def check_relative_name(name: str) -> str:
    """A file name from the wire must stay inside the destination folder."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name:
        raise ConfigError(f"model file name {name!r} must be a relative path inside the model folder")
    return name


@dataclass(frozen=True)
class Chunk:
    index: int
    offset: int
    length: int


def plan_chunks(size: int, chunk_size: int) -> List[Chunk]:
    """Contiguous chunks covering ``size`` bytes; an empty file still gets one (empty) chunk so it is created."""
    validate_chunk_size(chunk_size)
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if size == 0:
        return [Chunk(0, 0, 0)]
    return [Chunk(i, off, min(chunk_size, size - off)) for i, off in enumerate(range(0, size, chunk_size))]


@dataclass
class FileEntry:
    name: str
    size: int
    sha256: str
    chunk_sha256: List[str] = field(default_factory=list)
    mtime_ns: int = 0  # sender side only: a file that changed after hashing must not be sent

    @property
    def num_chunks(self) -> int:
        return len(self.chunk_sha256)

    def chunks(self, chunk_size: int) -> List[Chunk]:
        return plan_chunks(self.size, chunk_size)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "chunk_sha256": list(self.chunk_sha256),
            "mtime_ns": self.mtime_ns,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FileEntry":
        return cls(
            check_relative_name(d["name"]),
            int(d["size"]),
            str(d["sha256"]),
            list(d["chunk_sha256"]),
            int(d.get("mtime_ns", 0)),
        )


@dataclass
class Manifest:
    chunk_size: int
    files: List[FileEntry]
    model_name: str = "model"

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def sha256_by_file(self) -> Dict[str, str]:
        return {f.name: f.sha256 for f in self.files}

    def file(self, name: str) -> FileEntry:
        for entry in self.files:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def to_dict(self) -> dict:
        files = [f.to_dict() for f in self.files]
        return {"chunk_size": self.chunk_size, "model_name": self.model_name, "files": files}

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        return cls(
            chunk_size=validate_chunk_size(int(d["chunk_size"])),
            files=[FileEntry.from_dict(f) for f in d["files"]],
            model_name=check_relative_name(str(d.get("model_name", "model"))),
        )


def sha256_bytes(data) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Union[str, Path]) -> str:
    """Whole-file sha256, read ``HASH_BLOCK`` at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def hash_file(path: Union[str, Path], chunk_size: int) -> FileEntry:
    """One read pass: whole-file sha256 and one sha256 per chunk, through one reusable buffer."""
    path = Path(path)
    before = path.stat()
    file_hash = hashlib.sha256()
    chunk_hashes: List[str] = []
    chunk_hash, in_chunk = hashlib.sha256(), 0
    buf = bytearray(min(HASH_BLOCK, chunk_size))
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view[: min(len(buf), chunk_size - in_chunk)])
            if not n:
                break
            file_hash.update(view[:n])
            chunk_hash.update(view[:n])
            in_chunk += n
            if in_chunk == chunk_size:
                chunk_hashes.append(chunk_hash.hexdigest())
                chunk_hash, in_chunk = hashlib.sha256(), 0
    after = path.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise ConfigError(f"{path} changed while it was being hashed; is something still writing the model?")
    if in_chunk or after.st_size == 0:
        chunk_hashes.append(chunk_hash.hexdigest())
    return FileEntry(path.name, after.st_size, file_hash.hexdigest(), chunk_hashes, after.st_mtime_ns)


def list_model_files(folder: Union[str, Path]) -> List[Path]:
    """Every regular file under ``folder`` (sorted), minus hidden files and our own ``.partial`` leftovers."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise ConfigError(f"model_dir {str(folder)!r} is not a folder or file")
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or PARTIAL_SUFFIX in name:
                continue
            files.append(Path(root) / name)
    if not files:
        raise ConfigError(f"model_dir {str(folder)!r} holds no files to send")
    return files


def build_manifest(folder: Union[str, Path], chunk_size: int, model_name: str = "", progress=None) -> Manifest:
    """Hash every file of a model folder (or a single file); ``progress(done_bytes, total_bytes)`` if given."""
    validate_chunk_size(chunk_size)
    folder = Path(folder)
    files = list_model_files(folder)
    base = folder.parent if folder.is_file() else folder
    total, done, entries = sum(p.stat().st_size for p in files), 0, []
    for path in files:
        entry = hash_file(path, chunk_size)
        entry.name = path.relative_to(base).as_posix()
        entries.append(entry)
        done += entry.size
        if progress:
            progress(done, total)
    return Manifest(chunk_size=chunk_size, files=entries, model_name=check_relative_name(model_name or base.name))


def read_chunk(fd: int, chunk: Chunk) -> bytes:
    """Read one chunk with ``os.pread``: only this slice is ever in memory.

    ``os.pread`` rather than ``mmap``: touched mmap pages count toward the process RSS until unmapped.
    """
    parts, got = [], 0
    while got < chunk.length:
        part = os.pread(fd, chunk.length - got, chunk.offset + got)
        if not part:
            raise IOError(f"unexpected end of file at offset {chunk.offset + got} (file shrank while sending?)")
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def need_all(manifest: Manifest) -> Dict[str, List[int]]:
    return {f.name: list(range(f.num_chunks)) for f in manifest.files}
