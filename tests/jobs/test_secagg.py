"""Secure aggregation in the FLARE simulator: jobs/clinical_ner (tiny model) with enable_secure_aggregation.

A test-only filter (tests/jobs/secagg_testkit.py) records each site's true update and the masked view the
server gets, and drops sites after masking; the production filter has no such switch."""

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration
KIT_DIR = Path(__file__).parent
KIT_FILTER = "secagg_testkit.RecordingSecAggFilter"


def _job(tmp_path, small_hospitals, tiny_clinical_job, drop_sites=()):
    from flaretune.aggregation.secagg import FILTER_PATH, enable_secure_aggregation
    from flaretune.jobcfg import JobFolder

    folder = JobFolder(tiny_clinical_job(tmp_path / "base", small_hospitals, rounds=1, num_threads=1, max_steps=1))
    folder.persistor_args["lora_r"] = 512  # > 1e5 adapter values on the tiny model, for the correlation test
    described = enable_secure_aggregation(folder, ["train"])
    assert described["result_quantization_removed"] == "float16" and described["task_request_interval"] == 0.5
    for chain in ("task_data_filters", "task_result_filters"):
        for entry in folder.client[chain]:
            for flt in entry["filters"]:
                if flt["path"] == FILTER_PATH:
                    flt.update(path=KIT_FILTER,
                               args={"record_dir": str(tmp_path / "rec"), "drop_sites": list(drop_sites)})
    return folder.write(tmp_path / "job")


def _simulate(tmp_path, job):
    from flaretune.provisioning.policy import ALLOW_PREFIX, allow_in_workspace
    from flaretune.simulate import simulate

    allow_in_workspace(tmp_path / "ws", [ALLOW_PREFIX, "secagg_testkit."])
    code, run_dir, log = simulate(job, tmp_path / "ws", 3, log_file=tmp_path / "sim.log", timeout=240,
                                  env={"PYTHONPATH": str(KIT_DIR)}, echo=lambda line: None)
    return code, run_dir, log.read_text(errors="replace")


def _fedavg(rec: Path, sites):
    """Plain FedAvg of the recorded true updates: sum_k n_k x_k / sum_k n_k in float64."""
    updates = [(dict(np.load(rec / f"{s}-true.npz")), json.loads((rec / f"{s}.json").read_text())["num_examples"])
               for s in sites]
    total = sum(n for _, n in updates)
    return {k: sum(p[k] * n for p, n in updates) / total for k in updates[0][0]}, total


def _relative_error(global_model, expected):
    diff = np.sqrt(sum(float(((global_model[k].astype(np.float64) - v) ** 2).sum()) for k, v in expected.items()))
    return diff / np.sqrt(sum(float((v ** 2).sum()) for v in expected.values()))


def test_the_server_gets_exactly_fedavg_and_sees_only_noise(tmp_path, small_hospitals, tiny_clinical_job):
    from safetensors.numpy import load_file

    code, run_dir, log = _simulate(tmp_path, _job(tmp_path, small_hospitals, tiny_clinical_job))
    assert code == 0 and run_dir is not None, log[-3000:]
    sites = ["site-1", "site-2", "site-3"]
    expected, total = _fedavg(tmp_path / "rec", sites)
    global_model = load_file(str(run_dir / "global_model" / "round-000.safetensors"))
    assert sorted(global_model) == sorted(expected)
    assert _relative_error(global_model, expected) < 1e-6
    # the server's view of site-1: uniform words, uncorrelated with its true update
    true = dict(np.load(tmp_path / "rec" / "site-1-true.npz"))
    masked = dict(np.load(tmp_path / "rec" / "site-1-masked.npz"))
    names = sorted(true)
    x = np.concatenate([true[k].ravel() for k in names])
    y = np.concatenate([masked[k].ravel() for k in names]).astype(np.float64)
    assert x.size >= 100_000 and masked[names[0]].dtype == np.uint64
    assert abs(np.corrcoef(x, y)[0, 1]) < 0.01
    meta_keys = json.loads((tmp_path / "rec" / "site-1.json").read_text())["masked_meta_keys"]
    assert "num_examples" not in meta_keys and "initial_metrics" not in meta_keys
    record = json.loads((run_dir / "global_model" / "history.json").read_text())["rounds"][0]
    assert sorted(record["sites"]) == sites and all(s["num_examples"] is None for s in record["sites"].values())
    info = record["secure_aggregation"]
    assert info["u2"] == sites and info["threshold"] == 2 and info["total_weight"] == pytest.approx(total, abs=1e-6)
    assert log.count("masked its update") == 3
    # the simulator has no startup kits: each site says once that its keys go unsigned and unchecked
    assert log.count("secure-aggregation keys are NOT signed or checked (no FLARE certificate at") == 3


def test_a_site_lost_after_masking_leaves_the_exact_sum_of_the_others(tmp_path, small_hospitals, tiny_clinical_job):
    from safetensors.numpy import load_file

    code, run_dir, log = _simulate(tmp_path, _job(tmp_path, small_hospitals, tiny_clinical_job, ["site-3"]))
    assert code == 0 and run_dir is not None, log[-3000:]
    expected, _ = _fedavg(tmp_path / "rec", ["site-1", "site-2"])
    global_model = load_file(str(run_dir / "global_model" / "round-000.safetensors"))
    assert _relative_error(global_model, expected) < 1e-6
    record = json.loads((run_dir / "global_model" / "history.json").read_text())["rounds"][0]
    assert record["secure_aggregation"]["u1"] == ["site-1", "site-2", "site-3"]
    assert record["secure_aggregation"]["u2"] == ["site-1", "site-2"] and record["missing"] == ["site-3"]


def test_more_dropouts_than_the_threshold_fail_the_round(tmp_path, small_hospitals, tiny_clinical_job):
    _, run_dir, log = _simulate(tmp_path, _job(tmp_path, small_hospitals, tiny_clinical_job, ["site-2", "site-3"]))
    assert ("round 1/1: secure aggregation masked inputs: 1 of 3 sites answered (site-1; dropped: site-2, site-3), "
            "the threshold is 2: too many dropouts, the round fails") in log
    assert run_dir is None or not (run_dir / "global_model" / "round-000.safetensors").exists()
