"""jobs/split_ner submitted unchanged (but for the tiny model and 2 rounds) to a real POC network on loopback:
the per-batch aux messages run between separate server and site processes."""

import json
from pathlib import Path

import pytest

from flaretune.poc import PocNetwork, submit_and_wait

SPLIT_JOB = Path(__file__).resolve().parents[2] / "jobs" / "split_ner"

pytestmark = pytest.mark.integration


def test_split_ner_runs_in_poc(tmp_path):
    from flaretune.data.clinical import make_clinical_dataset
    from flaretune.jobcfg import JobFolder

    data = tmp_path / "data"
    make_clinical_dataset(data, n_sites=3, seed=2, n_train=32, n_test=8)
    folder = JobFolder(SPLIT_JOB)
    folder.set_rounds(2)
    folder.persistor_args.update({"model_name": "tiny-minilm-ner", "lora_r": 2})
    folder.executor_args.update({"num_threads": 1})
    job = folder.write(tmp_path / "job")

    network = PocNetwork(tmp_path / "poc", n_clients=3, extra_env={"FLARETUNE_DATA_DIR": str(data)})
    try:
        network.prepare()
        network.start()
        _, status, result = submit_and_wait(network, job, timeout=600)
    finally:
        network.stop()
    assert status == "FINISHED:COMPLETED", status
    histories = list(result.glob("**/global_model/history.json"))
    assert len(histories) == 1, f"no history in the downloaded result {result}"
    rounds = json.loads(histories[0].read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and all(r["failed"] == [] for r in rounds)
    # 32 records a site in batches of 16: two steps each, every middle step serving the three sites
    assert [r["middle_steps"] for r in rounds] == [2, 2]
    assert all(st["steps"] == 2 for r in rounds for st in r["sites"].values())
    assert len(list(result.glob("**/global_model/adapter/adapter_model.safetensors"))) == 1
