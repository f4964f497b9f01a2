"""model_push end to end in the FLARE simulator: a small model in many 64 KiB chunks reaches both sites."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flaretune.streaming.state_dict import write_synthetic_model

JOB = Path(__file__).parent / "jobs" / "model_push"
SITES = ("site-1", "site-2")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_simulator(tmp_path: Path, **server_args) -> tuple:
    """Copy the test job, point it at a fresh synthetic model, run the simulator in a subprocess."""
    model = write_synthetic_model(tmp_path / "model", 3_000_000, shard_mb=1, tensor_mb=0.5)
    job = tmp_path / "job"
    shutil.copytree(JOB, job)
    config = job / "app" / "config" / "config_fed_server.json"
    server = json.loads(config.read_text())
    server["workflows"][0]["args"].update(model_dir=str(model), chunk_mb=0.0625, slice_mb=0.03, **server_args)
    config.write_text(json.dumps(server, indent=1))
    workspace = tmp_path / "ws"
    (workspace / "local").mkdir(parents=True)
    from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST

    # FLARE 2.9 builds only allow-listed component classes: add ours for this workspace
    policy = {"format_version": 2, "class_allow_list": list(DEFAULT_CLASS_ALLOW_LIST) + ["flaretune."]}
    (workspace / "local" / "resources.json").write_text(json.dumps(policy))
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [sys.executable, "-m", "nvflare.cli", "simulator", str(job), "-w", str(workspace), "-n", "2", "-t", "2"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    return proc, model, workspace


@pytest.mark.integration
def test_model_reaches_every_site_with_matching_sha256_despite_corrupt_chunks(tmp_path):
    proc, model, ws = _run_simulator(tmp_path, corrupt_chunks=[{"file": "*", "chunk": 3, "times": 2}])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    site_logs = "".join((ws / site / "log.txt").read_text() for site in SITES)
    assert "refused" in site_logs and "chunk 3" in site_logs  # the corrupt sends were caught and resent
    sources = sorted(p for p in model.iterdir())
    for site in SITES:
        dest = ws / site / "models" / "base"
        for src in sources:
            assert _sha(dest / src.name) == _sha(src), f"{site}: {src.name}"
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
