"""jobs/clinical_ner end to end in the FLARE simulator, with the commands the README gives."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flaretune.simulate import find_server_run_dir, venv_env

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def simulated(tmp_path_factory, small_hospitals, tiny_clinical_job):
    root = tmp_path_factory.mktemp("clinical_sim")
    job = tiny_clinical_job(root / "job", small_hospitals, rounds=2)
    ws = root / "ws"
    env = venv_env()
    subprocess.run([str(BIN / "flaretune"), "site-policy", str(ws)], check=True, env=env)
    proc = subprocess.run(
        [str(BIN / "nvflare"), "simulator", str(job), "-w", str(ws), "-n", "3", "-t", "3"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = find_server_run_dir(ws)
    assert run_dir is not None, f"no global model written; simulator output:\n{proc.stdout[-3000:]}"
    return run_dir


def test_rounds_are_aggregated_and_persisted(simulated):
    history = json.loads((simulated / "global_model" / "history.json").read_text())
    assert [r["round"] for r in history["rounds"]] == [0, 1]
    for record in history["rounds"]:
        assert sorted(record["sites"]) == ["site-1", "site-2", "site-3"]
        assert record["rejected"] == {} and record["missing"] == []
        for client in record["sites"].values():
            assert client["num_examples"] > 0
            assert 0.0 <= client["metrics"]["local_f1"] <= 1.0
            assert "global_f1_Chemical" in client["metrics"] or "global_f1_Disease" in client["metrics"]
    assert sorted(history["final"]) == ["site-1", "site-2", "site-3"]
    assert all(0.0 <= m["f1"] <= 1.0 for m in history["final"].values())
    assert (simulated / "global_model" / "round-000.safetensors").exists()
    assert (simulated / "global_model" / "round-001.safetensors").exists()


def test_each_round_splits_into_the_sites_work_and_flare_overhead(simulated):
    """The sites' timing metrics travel through FLARE and lie inside their round: the breakdown adds up."""
    from flaretune.bench.overhead import PARTS, job_breakdown
    from flaretune.train.flow import TASK_RECEIVED_AT, WORK_ENDED_AT, WORK_STARTED_AT

    history = json.loads((simulated / "global_model" / "history.json").read_text())
    for record in history["rounds"]:
        for client in record["sites"].values():
            m = client["metrics"]
            assert record["started_at"] < m[TASK_RECEIVED_AT] <= m[WORK_STARTED_AT] < m[WORK_ENDED_AT] \
                <= record["results_at"] <= record["started_at"] + record["seconds"]
            assert m["work_seconds"] == pytest.approx(m[WORK_ENDED_AT] - m[WORK_STARTED_AT])
    breakdown = job_breakdown(history)
    assert breakdown["timed_rounds"] == 2
    for row in breakdown["rounds"]:
        assert sum(row[p] for p in PARTS) == pytest.approx(row["span"], abs=1e-3)
        assert all(row[p] >= -1e-6 for p in PARTS)
        assert 0.0 < row["overhead_fraction"] < 1.0


def test_the_last_round_is_checkpointed(simulated):
    from safetensors.numpy import load_file

    state = json.loads((simulated / "checkpoint" / "state.json").read_text())
    assert state["round"] == 1 and state["strategy"]["meta"]["name"] == "fedavg"
    assert [r["round"] for r in state["history"]["rounds"]] == [0, 1]
    saved = load_file(str(simulated / "checkpoint" / state["global_model"]["file"]))
    published = load_file(str(simulated / "global_model" / "round-001.safetensors"))
    assert saved.keys() == published.keys() and all((saved[k] == published[k]).all() for k in saved)
    assert sorted(p.name for p in (simulated / "checkpoint").iterdir()) == [
        "global-001.safetensors", "state.json", "strategy-001.safetensors"]


def test_only_adapter_tensors_travel(simulated):
    from safetensors.numpy import load_file

    tensors = load_file(str(simulated / "global_model" / "round-001.safetensors"))
    assert all("lora_" in name or "classifier" in name for name in tensors)
    history = json.loads((simulated / "global_model" / "history.json").read_text())
    upload = history["rounds"][0]["sites"]["site-1"]["upload_param_bytes"]
    assert upload == sum(t.nbytes for t in tensors.values())


def test_metrics_reach_tensorboard(simulated):
    events = list((simulated / "tb_events").glob("site-*/events.out.tfevents.*"))
    assert {p.parent.name for p in events} == {"site-1", "site-2", "site-3"}


def test_adapter_loads_with_peft_and_exports_merged(simulated, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForTokenClassification

    from flaretune.cli import main
    from flaretune.models import load_base_model
    from flaretune.models.lora import read_adapter_spec

    adapter = simulated / "global_model" / "adapter"
    spec = read_adapter_spec(adapter)
    peft_model = PeftModel.from_pretrained(load_base_model(spec.model_name, labels=spec.labels), str(adapter)).eval()
    assert main(["export", str(adapter), "--merge", "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "model.safetensors").exists()
    merged = AutoModelForTokenClassification.from_pretrained(str(tmp_path / "merged")).eval()
    assert merged.config.id2label[1] == "B-Chemical"
    ids = torch.tensor([[101, 7592, 2000, 3000, 102]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, peft_model(input_ids=ids).logits, atol=1e-4, rtol=1e-4)


def test_quantization_filters_run_both_ways(simulated):
    """The shipped job quantizes task data (server) and results (sites); each side dequantizes."""
    from flaretune.jobcfg import JobFolder

    qtype = JobFolder(simulated.parents[2] / "job").quantization()
    assert qtype, "jobs/clinical_ner ships with quantization filters in both directions"
    workspace = simulated.parents[1]
    server_log = "".join(p.read_text(errors="replace") for p in (workspace / "server").glob("**/log.txt"))
    site_log = "".join(p.read_text(errors="replace") for p in workspace.glob("site-1/**/log.txt"))
    for log in (server_log, site_log):
        assert f"{qtype} quantized" in log and f"{qtype} dequantized" in log
