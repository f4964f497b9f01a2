import json

import pytest

from flaretune.streaming.chunks import build_manifest, plan_chunks, sha256_bytes
from flaretune.streaming.writer import ChecksumError, FileWriter, TransferReceiver

CHUNK = 1024


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model-00001.safetensors").write_bytes(bytes((i * 7) % 251 for i in range(5000)))
    (src / "config.json").write_bytes(b'{"hidden": 8}')
    return src


def _chunks(path):
    data = path.read_bytes()
    return [(c.index, data[c.offset : c.offset + c.length]) for c in plan_chunks(len(data), CHUNK)]


def test_whole_transfer_publishes_each_file_verified(source, tmp_path):
    manifest = build_manifest(source, CHUNK)
    receiver = TransferReceiver(tmp_path / "dest", manifest)
    assert receiver.need() == {"config.json": [0], "model-00001.safetensors": [0, 1, 2, 3, 4]}
    for entry in manifest.files:
        for index, data in _chunks(source / entry.name):
            assert receiver.accept(entry.name, index, data, sha256_bytes(data)).ok
    assert receiver.complete and not receiver.need()
    for entry in manifest.files:
        assert (tmp_path / "dest" / entry.name).read_bytes() == (source / entry.name).read_bytes()
    assert not list((tmp_path / "dest").glob("*.partial*"))


def test_corrupt_chunk_is_refused_and_a_resend_accepted(source, tmp_path):
    manifest = build_manifest(source, CHUNK)
    entry = manifest.file("model-00001.safetensors")
    writer = FileWriter(tmp_path / "dest", entry, CHUNK)
    index, data = _chunks(source / entry.name)[2]
    bad = bytearray(data)
    bad[10] ^= 0xFF
    outcome = writer.write(index, bytes(bad), sha256_bytes(data))  # the sender's true sha, damaged bytes
    assert not outcome.ok and "chunk 2" in outcome.reason and entry.name in outcome.reason
    assert 2 in writer.missing()
    assert writer.write(index, data, sha256_bytes(data)).ok
    assert 2 not in writer.missing()


def test_short_chunk_is_refused(source, tmp_path):
    entry = build_manifest(source, CHUNK).file("model-00001.safetensors")
    writer = FileWriter(tmp_path / "dest", entry, CHUNK)
    _, data = _chunks(source / entry.name)[0]
    assert not writer.write(0, data[:-1], sha256_bytes(data[:-1])).ok


def test_file_checksum_failure_is_never_published(source, tmp_path):
    manifest = build_manifest(source, CHUNK)
    entry = manifest.file("model-00001.safetensors")
    entry.sha256 = "0" * 64  # every chunk checks out, the whole file does not
    receiver = TransferReceiver(tmp_path / "dest", manifest)
    chunks = _chunks(source / entry.name)
    for index, data in chunks[:-1]:
        assert receiver.accept(entry.name, index, data, sha256_bytes(data)).ok
    index, data = chunks[-1]
    with pytest.raises(ChecksumError, match="model-00001.safetensors.*not published"):
        receiver.accept(entry.name, index, data, sha256_bytes(data))
    dest = tmp_path / "dest"
    assert not (dest / entry.name).exists()
    assert not (dest / (entry.name + ".partial")).exists()


def test_interrupted_transfer_resumes_with_only_the_missing_chunks(source, tmp_path):
    manifest = build_manifest(source, CHUNK)
    name = "model-00001.safetensors"
    chunks = _chunks(source / name)
    first = TransferReceiver(tmp_path / "dest", manifest)
    for index, data in [chunks[0], chunks[1], chunks[3]]:  # out of order on purpose
        assert first.accept(name, index, data, sha256_bytes(data)).ok
    first.close()  # the process dies here
    sidecar = json.loads((tmp_path / "dest" / (name + ".partial.json")).read_text())
    assert sidecar["received"] == [0, 1, 3]

    second = TransferReceiver(tmp_path / "dest", manifest)
    assert second.need() == {"config.json": [0], name: [2, 4]}
    for index, data in [chunks[2], chunks[4]]:
        outcome = second.accept(name, index, data, sha256_bytes(data))
    assert outcome.published
    assert (tmp_path / "dest" / name).read_bytes() == (source / name).read_bytes()


def test_resume_does_not_trust_the_sidecar(source, tmp_path):
    manifest = build_manifest(source, CHUNK)
    name = "model-00001.safetensors"
    chunks = _chunks(source / name)
    first = TransferReceiver(tmp_path / "dest", manifest)
    for index, data in chunks[:2]:
        first.accept(name, index, data, sha256_bytes(data))
    first.close()
    partial = tmp_path / "dest" / (name + ".partial")
    raw = bytearray(partial.read_bytes())
    raw[CHUNK + 5] ^= 0xFF  # chunk 1 rotted on disk after it was recorded
    partial.write_bytes(bytes(raw))
    assert TransferReceiver(tmp_path / "dest", manifest).need()[name] == [1, 2, 3, 4]


def test_already_present_file_is_not_needed_again(source, tmp_path):
    manifest = build_manifest(source, CHUNK)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "config.json").write_bytes((source / "config.json").read_bytes())
    assert "config.json" not in TransferReceiver(dest, manifest).need()


def test_stale_partial_of_another_version_is_discarded(source, tmp_path):
    name = "model-00001.safetensors"
    old = build_manifest(source, CHUNK)
    receiver = TransferReceiver(tmp_path / "dest", old)
    index, data = _chunks(source / name)[0]
    receiver.accept(name, index, data, sha256_bytes(data))
    receiver.close()
    (source / name).write_bytes(b"new version" * 300)
    new = build_manifest(source, CHUNK)
    assert TransferReceiver(tmp_path / "dest", new).need()[name] == list(range(new.file(name).num_chunks))


def test_chunk_in_slices_is_verified_at_its_last_slice(source, tmp_path):
    manifest = build_manifest(source, CHUNK)
    name = "model-00001.safetensors"
    receiver = TransferReceiver(tmp_path / "dest", manifest)
    data = (source / name).read_bytes()
    for c in plan_chunks(len(data), CHUNK):
        body = data[c.offset : c.offset + c.length]
        sha = sha256_bytes(body)
        for start in range(0, c.length, 300):
            piece = body[start : start + 300]
            last = start + 300 >= c.length
            outcome = receiver.accept(name, c.index, piece, sha, offset=c.offset + start, last=last)
            assert outcome.ok
    assert outcome.published
    assert (tmp_path / "dest" / name).read_bytes() == data


def test_slice_out_of_order_refuses_the_chunk_and_a_resend_restarts_it(source, tmp_path):
    entry = build_manifest(source, CHUNK).file("model-00001.safetensors")
    writer = FileWriter(tmp_path / "dest", entry, CHUNK)
    _, body = _chunks(source / entry.name)[1]
    sha = sha256_bytes(body)
    assert writer.write_slice(1, CHUNK, body[:512], sha, last=False).ok
    assert not writer.write_slice(1, CHUNK + 600, body[600:], sha, last=True).ok  # a slice went missing
    assert 1 in writer.missing()
    assert writer.write_slice(1, CHUNK, body[:512], sha, last=False).ok  # the resend starts over
    assert writer.write_slice(1, CHUNK + 512, body[512:], sha, last=True).ok
    assert 1 not in writer.missing()


def test_corrupt_slice_is_caught_at_the_end_of_its_chunk(source, tmp_path):
    entry = build_manifest(source, CHUNK).file("model-00001.safetensors")
    writer = FileWriter(tmp_path / "dest", entry, CHUNK)
    _, body = _chunks(source / entry.name)[0]
    bad = bytearray(body[:512])
    bad[3] ^= 1
    assert writer.write_slice(0, 0, bytes(bad), sha256_bytes(body), last=False).ok
    outcome = writer.write_slice(0, 512, body[512:], sha256_bytes(body), last=True)
    assert not outcome.ok and "failed sha256" in outcome.reason
    assert 0 in writer.missing()
