"""Full-model FedAvg in the simulator: the global model and every site's update travel as streamed folders."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from flaretune.streaming.state_dict import load_state_dict

JOB = Path(__file__).resolve().parents[2] / "jobs" / "streamed_fedavg"


def _initial_model(folder: Path) -> Path:
    from flaretune.data.types import CLINICAL_NOTES_LABELS
    from flaretune.models.base import load_base_model, load_tokenizer

    model = load_base_model("tiny-minilm-ner", labels=CLINICAL_NOTES_LABELS, seed=0)
    model.save_pretrained(str(folder), safe_serialization=True)
    load_tokenizer("tiny-minilm-ner").save_pretrained(str(folder))
    return folder


@pytest.mark.integration
def test_full_models_are_pushed_trained_streamed_back_and_averaged(tmp_path):
    from flaretune.simulate import run_simulator

    initial = _initial_model(tmp_path / "initial")
    job = tmp_path / "job"
    shutil.copytree(JOB, job)
    server_cfg = job / "app" / "config" / "config_fed_server.json"
    server = json.loads(server_cfg.read_text())
    # many small chunks both ways; keep the last round's updates to check the average
    server["workflows"][0]["args"].update(model_dir=str(initial), chunk_mb=0.5, keep_updates=True)
    server_cfg.write_text(json.dumps(server, indent=1))
    client_cfg = job / "app" / "config" / "config_fed_client.json"
    client = json.loads(client_cfg.read_text())
    client["executors"][0]["executor"]["args"].update(
        chunk_mb=0.5, max_steps=3, learning_rate=1e-3, synthetic_train_size=48, num_threads=1)
    client_cfg.write_text(json.dumps(client, indent=1))

    run_dir = run_simulator(job, tmp_path / "ws", 2, threads=2, log_file=tmp_path / "sim.log", timeout=600)

    history = json.loads((run_dir / "global_model" / "history.json").read_text())
    assert "error" not in history, history.get("error")
    assert [r["round"] for r in history["rounds"]] == [0, 1]
    assert history["strategy"] == "fedavg" and all(r["rejected"] == {} for r in history["rounds"])
    last = history["rounds"][-1]
    assert sorted(last["sites"]) == ["site-1", "site-2"]
    assert last["model_bytes"] > 1_000_000  # the whole model went out, in about a dozen chunks of 0.5 MiB

    # the global model is the example-weighted mean of the two streamed updates, tensor by tensor
    updates = {site: load_state_dict(Path(info["update"])) for site, info in last["sites"].items()}
    weights = {site: info["num_examples"] for site, info in last["sites"].items()}
    assert all(w > 0 for w in weights.values())
    final = load_state_dict(run_dir / "global_model" / "round-001")
    initial_state = load_state_dict(initial)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    expected = sum(updates[s][name] * w for s, w in weights.items()) / sum(weights.values())
    torch.testing.assert_close(final[name], expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(final[name], initial_state[name])  # every weight trained, not only adapters
    assert set(final) == set(initial_state)

    # the result loads as a model, with config and tokenizer copied alongside
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    AutoModelForTokenClassification.from_pretrained(str(run_dir / "global_model" / "round-001"))
    AutoTokenizer.from_pretrained(str(run_dir / "global_model" / "round-001"))
    # sites keep no pushed copies once they have trained on them
    assert not list((tmp_path / "ws").glob("**/models/ner-round-*/*.safetensors"))
