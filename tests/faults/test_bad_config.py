"""Bad job configuration is refused before training, in one line that names the field (and, at a site, the site)."""

import json
import shutil
from pathlib import Path

import pytest

from flaretune.errors import ConfigError


@pytest.mark.parametrize("args, message", [
    ({"learning_rate": -0.1}, "learning_rate must be a number > 0, got -0.1"),
    ({"learning_rate": "2e-3"}, "learning_rate must be a number > 0, got '2e-3'"),
    ({"learning_rate": 0}, "learning_rate must be a number > 0, got 0"),
    ({"train_step": "sgd"}, "Invalid train_step 'sgd'; valid: backprop, fedprox, dpsgd, forward_only"),
])
def test_an_executor_refuses_a_bad_training_setting_at_construction(args, message):
    from flaretune.executors.peft_train import PeftTrainExecutor

    with pytest.raises(ConfigError) as err:
        PeftTrainExecutor(**args)
    assert str(err.value) == message


@pytest.mark.parametrize("args, message", [
    ({"aggregator": "fedfoo"}, "Invalid aggregator 'fedfoo'; valid: fedavg, fedprox, fedavgm, fedadagrad, fedadam, fedyogi"),
    ({"min_clients": -1}, "min_clients must be an integer >= 0, got -1"),
    ({"min_clients": "2"}, "min_clients must be an integer >= 0, got '2'"),
])
def test_the_controller_refuses_a_bad_setting_at_construction(args, message):
    from flaretune.aggregation.controller import FedAggController

    with pytest.raises(ConfigError) as err:
        FedAggController(**args)
    assert str(err.value) == message


def test_an_unknown_quantization_type_is_refused_at_construction():
    from flaretune.filters.quantize import QuantizeFilter

    with pytest.raises(ConfigError) as err:
        QuantizeFilter(quantization_type="nf5")
    assert str(err.value) == "Invalid quantization_type 'nf5' for QuantizeFilter; valid: float16, bfloat16, blockwise8, nf4, fp4, entropy"


@pytest.mark.integration
@pytest.mark.faults
def test_a_site_whose_data_path_is_missing_is_named_and_the_job_stops_before_a_round_counts(tmp_path):
    from flaretune.data.clinical import make_clinical_dataset
    from flaretune.jobcfg import JobFolder
    from flaretune.simulate import simulate

    data = tmp_path / "data"
    make_clinical_dataset(data, n_sites=2, seed=1, skew=0.8, n_train=16, n_test=8)
    shutil.rmtree(data / "site-2")  # site-2's admin pointed the job at a folder that is not there
    folder = JobFolder(Path(__file__).resolve().parents[2] / "jobs" / "clinical_ner")
    folder.set_rounds(2)
    folder.persistor_args.update({"model_name": "tiny-minilm-ner", "lora_r": 2})
    folder.workflow_args["min_clients"] = 2
    folder.executor_args.update({"max_steps": 2, "num_threads": 1, "data_path": str(data / "{site_name}")})
    job = folder.write(tmp_path / "job")
    _, run_dir, log = simulate(job, tmp_path / "ws", 2, log_file=tmp_path / "sim.log", echo=lambda line: None,
                               timeout=150)

    reason = (f"data_path: {data / 'site-2'}:0: site data path does not exist "
              "(expected a CoNLL file or a folder with train.conll)")
    history = json.loads((run_dir / "global_model" / "history.json").read_text())
    assert history["error"] == f"round 1/2: 1 result(s) accepted, 2 needed (min_clients); site-2: {reason}"
    assert history["rounds"] == []
    assert f"train: site-2: {reason}" in log.read_text()  # the site's own log line
