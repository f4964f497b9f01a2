import hashlib

import pytest

from flaretune.errors import ConfigError
from flaretune.streaming.chunks import (
    MAX_CHUNK_BYTES,
    Chunk,
    Manifest,
    build_manifest,
    check_relative_name,
    chunk_size_from_mb,
    hash_file,
    plan_chunks,
    read_chunk,
)


@pytest.mark.parametrize(
    "size, chunk, expected",
    [
        (0, 4, [Chunk(0, 0, 0)]),
        (3, 4, [Chunk(0, 0, 3)]),
        (4, 4, [Chunk(0, 0, 4)]),
        (9, 4, [Chunk(0, 0, 4), Chunk(1, 4, 4), Chunk(2, 8, 1)]),
    ],
)
def test_plan_chunks_covers_the_file(size, chunk, expected):
    assert plan_chunks(size, chunk) == expected


@pytest.mark.parametrize("bad", [0, -1, 1024.5, MAX_CHUNK_BYTES / (1 << 20) + 1, "64", True])
def test_chunk_size_validated(bad):
    with pytest.raises(ConfigError, match="chunk_mb"):
        chunk_size_from_mb(bad)


def test_chunk_size_accepts_fractions_and_the_maximum():
    assert chunk_size_from_mb(0.0625) == 64 * 1024
    assert chunk_size_from_mb(1024) == MAX_CHUNK_BYTES


@pytest.mark.parametrize("size", [0, 1, 1000, 4096, 10_000])
def test_hash_file_matches_hashlib(tmp_path, size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    entry = hash_file(path, 1024)
    assert entry.size == size
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    chunks = plan_chunks(size, 1024)
    assert entry.chunk_sha256 == [hashlib.sha256(data[c.offset : c.offset + c.length]).hexdigest() for c in chunks]


def test_manifest_walks_folder_skips_hidden_and_partial(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.safetensors").write_bytes(b"a" * 10)
    (tmp_path / "sub" / "b.json").write_bytes(b"{}")
    (tmp_path / ".hidden").write_bytes(b"x")
    (tmp_path / "c.safetensors.partial").write_bytes(b"x")
    manifest = build_manifest(tmp_path, 4, model_name="base")
    assert [f.name for f in manifest.files] == ["a.safetensors", "sub/b.json"]
    assert manifest.total_bytes == 12
    assert Manifest.from_dict(manifest.to_dict()) == manifest


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "", "a\\b"])
def test_names_from_the_wire_stay_inside(name):
    with pytest.raises(ConfigError):
        check_relative_name(name)


def test_read_chunk_reads_only_the_slice(tmp_path):
    import os

    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert read_chunk(fd, Chunk(1, 4, 4)) == b"4567"
    finally:
        os.close(fd)
