"""A streamed model transfer with corrupt chunks or a wrong checksum, in the simulator: resent or refused,
never published. The corruption comes from outside the production code: the server runs the test-only
``faultstream.CorruptingModelPush``, and the sites the real receiver."""

import json
import shutil
from pathlib import Path

import pytest

from .conftest import REPO, SITES_DIR, simulate_faults
from flaretune.streaming.chunks import build_manifest, file_sha256
from flaretune.streaming.state_dict import write_synthetic_model

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SITES = ("site-1", "site-2")
SHARD_2 = "model-00002-of-00003.safetensors"


def _faultstream():
    import sys

    sys.path.insert(0, str(SITES_DIR))
    try:
        import faultstream
    finally:
        sys.path.pop(0)
    return faultstream


def _push(tmp_path: Path, corrupt_chunks=None, run: str = "", client_args=None, **server_args):
    """``jobs/model_push`` for a 3 MB synthetic model (written once per tmp_path) in 64 KiB chunks; with
    ``corrupt_chunks`` its server runs the corrupting controller, without them the production one."""
    model = tmp_path / "model"
    if not model.exists():
        write_synthetic_model(model, 3_000_000, shard_mb=1, tensor_mb=0.5)
    job = tmp_path / f"job{run}"
    shutil.copytree(REPO / "jobs" / "model_push", job)
    config = job / "app" / "config" / "config_fed_server.json"
    server = json.loads(config.read_text())
    workflow = server["workflows"][0]
    workflow["args"].update(model_dir=str(model), chunk_mb=0.0625, slice_mb=0.03, **server_args)
    if corrupt_chunks:
        workflow["path"] = "faultstream.CorruptingModelPush"
        workflow["args"]["corrupt_chunks"] = corrupt_chunks
    config.write_text(json.dumps(server, indent=1))
    client_config = job / "app" / "config" / "config_fed_client.json"
    client = json.loads(client_config.read_text())
    client["executors"][0]["executor"]["args"].update(client_args or {})
    client_config.write_text(json.dumps(client, indent=1))
    code, _, log, _ = simulate_faults(job, tmp_path, timeout=240, n_sites=2)
    return code, log, model, tmp_path / "ws"


def test_corrupt_chunks_are_refused_resent_and_every_site_gets_the_true_bytes(tmp_path):
    code, log, model, ws = _push(tmp_path, [{"file": "*", "chunk": 3, "times": 2}])
    assert code == 0, log[-3000:]
    site_logs = "".join((ws / site / "log.txt").read_text() for site in SITES)
    assert "refused" in site_logs and "chunk 3" in site_logs  # the corrupt sends were caught and resent
    for site in SITES:
        dest = ws / site / "models" / "base"
        for src in sorted(model.iterdir()):
            assert file_sha256(dest / src.name) == file_sha256(src), f"{site}: {src.name}"
        assert not list(dest.glob("*.partial*"))


def test_a_file_failing_its_checksum_is_never_published_and_the_job_names_it(tmp_path):
    code, _, _, ws = _push(tmp_path, [{"file": SHARD_2, "file_sha256": True}])
    assert code != 0
    errors = (ws / "server" / "error_log.txt").read_text()
    assert "model_push failed: model push to site-" in errors and SHARD_2 in errors and "not published" in errors
    for site in SITES:
        dest = ws / site / "models" / "base"
        assert not (dest / SHARD_2).exists()
        assert (dest / "model-00001-of-00003.safetensors").exists()  # files before it are fine


def test_a_chunk_that_stays_corrupt_fails_the_push_naming_the_file(tmp_path):
    code, _, _, ws = _push(tmp_path, [{"file": "model-00001-of-00003.safetensors", "chunk": 1, "times": 9}],
                           max_retries=2)
    assert code != 0
    errors = (ws / "server" / "error_log.txt").read_text()
    assert "model-00001-of-00003.safetensors: chunk 1 still refused after 3 attempts" in errors
    for site in SITES:
        assert not (ws / site / "models" / "base" / "model-00001-of-00003.safetensors").exists()


def test_a_push_broken_off_resumes_with_only_the_missing_chunks(tmp_path):
    sites_dir = tmp_path / "sites" / "{site_name}"  # outside the simulator workspace, which each run clears
    code, _, model, _ = _push(tmp_path, [{"file": SHARD_2, "chunk": 5, "times": 9}], run="1",
                              client_args={"dest_dir": str(sites_dir)}, max_retries=0)
    assert code != 0  # the push broke off at chunk 5 of the second shard
    report = tmp_path / "report.json"
    code, log, _, _ = _push(tmp_path, run="2", client_args={"dest_dir": str(sites_dir)}, report_path=str(report))
    assert code == 0, log[-3000:]
    summary = json.loads(report.read_text())
    total_chunks = sum(-(-p.stat().st_size // (64 << 10)) for p in model.iterdir())
    for site in SITES:
        # the first shard arrived whole in the first run and the second in part: far from everything is resent
        assert 0 < summary["need_chunks"][site] < total_chunks - 16, summary["need_chunks"]
        dest = tmp_path / "sites" / site / "base"
        for src in model.iterdir():
            assert file_sha256(dest / src.name) == file_sha256(src), f"{site}: {src.name}"


def test_the_corrupter_flips_only_the_first_sends_and_refuses_a_bad_spec():
    faultstream = _faultstream()
    corrupt = faultstream.corrupter([{"file": "a.bin", "chunk": 1, "times": 2}, {"chunk": 0}])
    data = b"abcd"
    assert corrupt("a.bin", 1, 1, data) == b"ab\x9cd" and corrupt("a.bin", 1, 2, data) == b"ab\x9cd"
    assert corrupt("a.bin", 1, 3, data) == data
    assert corrupt("b.bin", 0, 1, data) == b"ab\x9cd"  # "*" is the default file
    assert corrupt("b.bin", 1, 1, data) == data
    assert faultstream.corrupter(None) is None
    with pytest.raises(Exception, match="corrupt_chunks entries look like"):
        faultstream.corrupter([{"file": "a"}])


def test_a_wrong_file_sha_is_announced_for_that_file_only(tmp_path):
    faultstream = _faultstream()
    (tmp_path / "a.bin").write_bytes(b"a" * 10)
    (tmp_path / "b.bin").write_bytes(b"b" * 5)
    manifest = build_manifest(tmp_path, 4)
    true_a = manifest.file("a.bin").sha256
    faultstream.corrupt_manifest(manifest, [{"file": "b.bin", "file_sha256": True}])
    assert manifest.file("b.bin").sha256 == "0" * 64
    assert manifest.file("a.bin").sha256 == true_a
