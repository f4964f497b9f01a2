"""``flaretune compare --method``: the client method reaches the server and every site; report.json names it,
counts its trainable parameters, and its upload is exactly the method's traveling tensors."""

import json
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from flaretune.cli import main
from flaretune.data.types import CLINICAL_NOTES_LABELS
from flaretune.models.lora import PeftSpec
from flaretune.train.layer_select import layer_of
from flaretune.train.methods import make_method
from flaretune.wire import update_wire_bytes

REPO = Path(__file__).resolve().parents[1]
JOB = "jobs/clinical_ner"


def test_an_unknown_method_is_one_line_naming_the_valid_ones(tmp_path, capsys):
    assert main(["compare", JOB, "--out", str(tmp_path), "--method", "sgd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Invalid --method 'sgd'; valid: lora, full, layer_skip, ffa_lora" in err[0]


def test_layer_skip_needs_layers_before_anything_starts(tmp_path, capsys):
    assert main(["compare", JOB, "--out", str(tmp_path), "--method", "layer_skip"]) == 2
    assert "--method layer_skip needs --layers" in capsys.readouterr().err


@pytest.mark.integration
def test_compare_with_layer_skip_sends_only_the_selected_layer(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "cmp"
    argv = ["compare", JOB, "--out", str(out), "--rounds", "1", "--model", "tiny-minilm-ner", "--sites", "2",
            "--method", "layer_skip", "--layers", "top1", "--lr", "0.001"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    spec = PeftSpec(model_name="tiny-minilm-ner", labels=_labels_from_job(out), method="layer_skip", layers="top1")
    method = make_method("layer_skip", spec)
    model = method.build()
    expected = {k: v.numpy() for k, v in method.get_params(model).items()}
    assert set(expected) == {n for n, _ in model.named_parameters() if layer_of(n) == 1 or n.startswith("classifier.")}
    assert report["method"] == "layer_skip" and report["layers"] == "top1" and report["learning_rate"] == 0.001
    assert report["trainable_params"] == sum(v.size for v in expected.values())
    assert report["bytes_per_round_per_client"] == update_wire_bytes(expected, "float16")  # the job ships float16
    assert report["peak_rss_mb"] > 0 and report["seconds_per_round"] > 0
    global_model = load_file(str(Path(report["adapter_dir"]).parent / "round-000.safetensors"))
    assert set(global_model) == set(expected)  # the server's global model is the selected layer and the head
    history = json.loads((Path(report["adapter_dir"]).parent / "history.json").read_text())
    peaks = [s["metrics"]["peak_rss_mb"] for r in history["rounds"] for s in r["sites"].values()]
    assert report["peak_rss_mb"] == max(peaks) and len(peaks) == 2
    assert "method layer_skip (layers top1)" in capsys.readouterr().out


def _labels_from_job(out):
    server = json.loads(next(out.glob("job/**/config_fed_server.json")).read_text())
    persistor = next(c for c in server["components"] if c["id"] == "persistor")
    return persistor["args"].get("labels") or list(CLINICAL_NOTES_LABELS)
