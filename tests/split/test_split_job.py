"""jobs/split_ner in the FLARE simulator on the tiny model: three sites, one of which raises mid-epoch in
round 1; the others finish every round, and the saved global adapter is the middle plus the averaged
client parts."""

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SITES_DIR = Path(__file__).resolve().parent / "sites"
HIDDEN = 32  # tiny-minilm-ner
BATCH = 8


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory):
    from flaretune.data.clinical import make_clinical_dataset

    root = tmp_path_factory.mktemp("split_hospitals")
    make_clinical_dataset(root, n_sites=3, seed=1, skew=0.8, n_train=24, n_test=12)
    return root


@pytest.fixture(scope="module")
def simulated(tmp_path_factory, hospitals):
    from flaretune.jobcfg import JobFolder
    from flaretune.provisioning.policy import ALLOW_PREFIX, allow_in_workspace
    from flaretune.simulate import simulate

    root = tmp_path_factory.mktemp("split_sim")
    job = JobFolder(REPO / "jobs" / "split_ner")
    job.set_rounds(2)
    job.persistor_args.update({"model_name": "tiny-minilm-ner", "lora_r": 2})
    job.workflow_args.update({"bottom_layers": 1, "top_layers": 0, "site_timeout": 60.0})
    ex = job.executor()
    ex["path"] = "splitsim.FailingSplitExecutor"
    ex["args"].update({"data_path": str(hospitals / "{site_name}"), "batch_size": BATCH, "num_threads": 1,
                       "fail_site": "site-3", "fail_round": 0, "fail_step": 1})
    folder = job.write(root / "job")
    allow_in_workspace(root / "ws", prefixes=(ALLOW_PREFIX, "splitsim."))
    pythonpath = os.pathsep.join(filter(None, [str(SITES_DIR), os.environ.get("PYTHONPATH")]))
    code, run_dir, log = simulate(folder, root / "ws", 3, log_file=root / "sim.log", env={"PYTHONPATH": pythonpath},
                                  echo=lambda line: None, timeout=500)
    text = log.read_text(errors="replace")
    assert code == 0 and run_dir is not None, text[-4000:]
    return run_dir, text


def _history(run_dir):
    return json.loads((run_dir / "global_model" / "history.json").read_text())["rounds"]


def test_a_site_raising_mid_epoch_leaves_the_round_and_the_others_finish(simulated):
    run_dir, log = simulated
    rounds = _history(run_dir)
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[0]["failed"] == ["site-3"] and sorted(rounds[0]["sites"]) == ["site-1", "site-2"]
    assert rounds[1]["failed"] == [] and sorted(rounds[1]["sites"]) == ["site-1", "site-2", "site-3"]
    assert "site-3 leaves mid-epoch (test)" in log
    for record in rounds:  # an epoch of 24 records in batches of 8, at every site that finished
        assert {s: st["steps"] for s, st in record["sites"].items()} == {s: 3 for s in record["sites"]}
    # round 1: site-3 sent one step then left; the first middle step served all three, later ones two
    assert rounds[0]["middle_steps"] == 3 and rounds[1]["middle_steps"] == 3


def test_bytes_per_step_is_the_cut_tensors_of_the_sites_batches(simulated, hospitals):
    from flaretune.data.site import load_site_ner_data
    from flaretune.models.lora import PeftSpec
    from flaretune.train.loop import batches
    from flaretune.train.ner_trainer import NerTrainer

    run_dir, _ = simulated
    labels = json.loads((REPO / "jobs" / "split_ner" / "app" / "config" / "config_fed_server.json").read_text())
    labels = labels["components"][0]["args"]["labels"]
    trainer = NerTrainer(PeftSpec(model_name="tiny-minilm-ner", labels=labels, lora_r=2))
    stats = _history(run_dir)[1]["sites"]["site-1"]
    encoded = trainer.encode(load_site_ner_data("site-1", str(hospitals / "site-1")).train)
    widths = [(ids.shape[0], ids.shape[1]) for ids, _, _ in batches(encoded, BATCH, trainer.pad_id, shuffle=True, seed=1)]
    # per step: activations up, int64 mask up, upper activations down, upper gradient up, lower gradient down
    expected = sum(b * t * (4 * HIDDEN * 4 + 8) for b, t in widths) / len(widths)
    assert stats["bytes_per_step"] == expected
    assert stats["seconds_per_step"] > 0 and stats["peak_rss_mb"] > 100


def test_the_global_adapter_is_saved_each_round_and_scores(simulated, hospitals):
    from safetensors.numpy import load_file

    from flaretune.data.site import load_site_ner_data
    from flaretune.models.lora import read_adapter_spec
    from flaretune.train.ner_trainer import NerTrainer

    run_dir, _ = simulated
    folder = run_dir / "global_model"
    first, last = load_file(str(folder / "round-000.safetensors")), load_file(str(folder / "round-001.safetensors"))
    assert first.keys() == last.keys() and any(".layer.1." in k for k in last) and any("classifier" in k for k in last)
    assert all(not (first[k] == last[k]).all() for k in last if "lora_B" in k or "classifier" in k)
    spec = read_adapter_spec(folder / "adapter")
    trainer = NerTrainer(spec)
    trainer.set_params(last)
    scores = trainer.evaluate(trainer.encode(load_site_ner_data("site-1", str(hospitals / "site-1")).test))
    assert 0.0 <= scores["f1"] <= 1.0 and scores["n_gold"] > 0
