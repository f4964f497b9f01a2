"""model_push end to end in the FLARE simulator: a small model in many 64 KiB chunks reaches both sites."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from flaretune.simulate import simulate
from flaretune.streaming.chunks import file_sha256
from flaretune.streaming.state_dict import write_synthetic_model

JOB = Path(__file__).resolve().parents[2] / "jobs" / "model_push"
SITES = ("site-1", "site-2")


def _run_simulator(tmp_path: Path, run: str = "", client_args=None, **server_args) -> tuple:
    """Copy the test job, point it at a synthetic model (written once per tmp_path), run the simulator."""
    model = tmp_path / "model"
    if not model.exists():
        write_synthetic_model(model, 3_000_000, shard_mb=1, tensor_mb=0.5)
    job = tmp_path / f"job{run}"
    shutil.copytree(JOB, job)
    config = job / "app" / "config" / "config_fed_server.json"
    server = json.loads(config.read_text())
    server["workflows"][0]["args"].update(model_dir=str(model), chunk_mb=0.0625, slice_mb=0.03, **server_args)
    config.write_text(json.dumps(server, indent=1))
    client_config = job / "app" / "config" / "config_fed_client.json"
    client = json.loads(client_config.read_text())
    client["executors"][0]["executor"]["args"].update(client_args or {})
    client_config.write_text(json.dumps(client, indent=1))
    workspace = tmp_path / f"ws{run}"
    code, _, log = simulate(job, workspace, 2, threads=2, env={"HOME": str(tmp_path / "home")}, timeout=240,
                            echo=lambda line: None)
    return SimpleNamespace(returncode=code, output=log.read_text()), model, workspace


@pytest.mark.integration
def test_model_reaches_every_site_with_matching_sha256_despite_corrupt_chunks(tmp_path):
    proc, model, ws = _run_simulator(tmp_path, corrupt_chunks=[{"file": "*", "chunk": 3, "times": 2}])
    assert proc.returncode == 0, proc.output[-3000:]
    site_logs = "".join((ws / site / "log.txt").read_text() for site in SITES)
    assert "refused" in site_logs and "chunk 3" in site_logs  # the corrupt sends were caught and resent
    sources = sorted(p for p in model.iterdir())
    for site in SITES:
        dest = ws / site / "models" / "base"
        for src in sources:
            assert file_sha256(dest / src.name) == file_sha256(src), f"{site}: {src.name}"
        assert not list(dest.glob("*.partial*"))


@pytest.mark.integration
def test_file_failing_its_checksum_is_never_published_and_the_job_names_it(tmp_path):
    bad = "model-00002-of-00003.safetensors"
    proc, model, ws = _run_simulator(tmp_path, corrupt_chunks=[{"file": bad, "file_sha256": True}])
    assert proc.returncode != 0
    errors = (ws / "server" / "error_log.txt").read_text()
    assert "model_push failed: model push to site-" in errors and bad in errors and "not published" in errors
    for site in SITES:
        dest = ws / site / "models" / "base"
        assert not (dest / bad).exists()
        assert (dest / "model-00001-of-00003.safetensors").exists()  # files before it are fine


@pytest.mark.integration
def test_chunk_that_stays_corrupt_fails_the_push_naming_the_file(tmp_path):
    proc, model, ws = _run_simulator(
        tmp_path, max_retries=2, corrupt_chunks=[{"file": "model-00001-of-00003.safetensors", "chunk": 1, "times": 9}]
    )
    assert proc.returncode != 0
    errors = (ws / "server" / "error_log.txt").read_text()
    assert "model-00001-of-00003.safetensors: chunk 1 still refused after 3 attempts" in errors
    for site in SITES:
        assert not (ws / site / "models" / "base" / "model-00001-of-00003.safetensors").exists()


@pytest.mark.integration
def test_interrupted_push_resumes_with_only_the_missing_chunks(tmp_path):
    sites_dir = tmp_path / "sites" / "{site_name}"  # outside the simulator workspace, which each run clears
    bad = "model-00002-of-00003.safetensors"
    first, model, _ = _run_simulator(tmp_path, run="1", client_args={"dest_dir": str(sites_dir)}, max_retries=0,
                                     corrupt_chunks=[{"file": bad, "chunk": 5, "times": 9}])
    assert first.returncode != 0  # the push broke off at chunk 5 of the second shard
    report = tmp_path / "report.json"
    second, _, _ = _run_simulator(tmp_path, run="2", client_args={"dest_dir": str(sites_dir)},
                                  report_path=str(report))
    assert second.returncode == 0, second.output[-3000:]
    summary = json.loads(report.read_text())
    total_chunks = sum(-(-p.stat().st_size // (64 << 10)) for p in model.iterdir())
    for site in SITES:
        # the first shard arrived whole in the first run and the second in part: far from everything is resent
        assert 0 < summary["need_chunks"][site] < total_chunks - 16, summary["need_chunks"]
        dest = tmp_path / "sites" / site / "base"
        for src in model.iterdir():
            assert file_sha256(dest / src.name) == file_sha256(src), f"{site}: {src.name}"
