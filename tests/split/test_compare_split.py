"""``flaretune compare jobs/split_ner`` on the tiny model: the split run beside federated LoRA on the same data,
with each one's bytes_per_step, seconds_per_step and peak_rss_mb of a site (one run for the module)."""

import json
import math
from pathlib import Path

import pytest

from flaretune.compare.split import lora_costs, split_costs

REPO = Path(__file__).resolve().parents[2]
BATCH = 16  # jobs/split_ner's batch_size


def _write_history(folder: Path, history: dict) -> Path:
    (folder / "global_model").mkdir(parents=True)
    (folder / "global_model" / "history.json").write_text(json.dumps(history))
    return folder


def test_split_costs_average_sites_and_rounds_and_take_the_largest_peak(tmp_path):
    site = lambda b, s, m: {"steps": 3, "train_loss": 1.0, "bytes_per_step": b, "seconds_per_step": s, "peak_rss_mb": m}
    folder = _write_history(tmp_path, {"cut": {"client_parts_bytes": 10}, "rounds": [
        {"round": 0, "sites": {"site-1": site(100, 0.5, 300), "site-2": site(300, 1.5, 310)}},
        {"round": 1, "sites": {"site-1": site(200, 1.0, 305)}}]})
    assert split_costs(folder) == {"bytes_per_step": 200.0, "seconds_per_step": 1.0, "peak_rss_mb": 310}


def test_lora_costs_spread_the_adapter_both_ways_over_the_rounds_steps(tmp_path):
    folder = _write_history(tmp_path, {"rounds": [{"round": 0, "sites": {
        "site-1": {"metrics": {"peak_rss_mb": 400.0, "seconds_per_step": 0.2}},
        "site-2": {"metrics": {"peak_rss_mb": 420.0, "seconds_per_step": 0.4}}}}]})
    costs = lora_costs(folder, upload_bytes=1000, steps_per_round=4)
    assert costs == {"bytes_per_step": 500.0, "seconds_per_step": pytest.approx(0.3), "peak_rss_mb": 420.0}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from flaretune.cli import main
    from flaretune.data.clinical import make_clinical_dataset
    from flaretune.data.conll import read_conll, write_conll

    root = tmp_path_factory.mktemp("split_compare")
    make_clinical_dataset(root / "src", n_sites=1, seed=2, n_train=40, n_test=16)
    train, test = read_conll(root / "src" / "site-1" / "train.conll"), read_conll(root / "src" / "site-1" / "test.conll")
    write_conll(train, root / "train.conll")
    write_conll(test, root / "test.conll")
    out = root / "cmp"
    assert main(["compare", str(REPO / "jobs" / "split_ner"), "--out", str(out), "--rounds", "1", "--sites", "2",
                 "--model", "tiny-minilm-ner", "--train", str(root / "train.conll"),
                 "--test", str(root / "test.conll")]) == 0
    return json.loads((out / "report.json").read_text()), out


@pytest.mark.integration
def test_compare_reports_split_beside_federated_lora_on_the_same_data(report):
    report, out = report
    assert report["scenario"] == "split_ner" and report["metric"] == "entity_f1"
    split, lora = report["split"], report["federated_lora"]
    assert split["test"] == report["federated"]["test"] and len(split["per_round"]) == len(lora["per_round"]) == 1
    assert 0.0 <= lora["test"] <= 1.0
    run_dir = next(out.glob("workspace/server/simulate_job"))
    assert {k: report[k] for k in ("bytes_per_step", "seconds_per_step", "peak_rss_mb")} == \
        {k: split[k] for k in ("bytes_per_step", "seconds_per_step", "peak_rss_mb")} == split_costs(run_dir)
    from flaretune.data.conll import read_conll

    steps = [math.ceil(len(read_conll(out / "data" / s / "train.conll")) / BATCH) for s in ("site-1", "site-2")]
    assert lora["bytes_per_step"] == pytest.approx(2 * lora["bytes_per_round_per_client"] / (sum(steps) / 2))
    assert split["bytes_per_step"] > lora["bytes_per_step"]  # activations every step vs an adapter a round
    assert report["bytes_per_round_per_client"] == int(split["bytes_per_step"] * sum(steps) / 2
                                                       + 2 * split["client_parts_bytes_per_round"])
