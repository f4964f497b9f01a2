"""enable_secure_aggregation edits a job folder; SecAggController checks its arguments."""

from pathlib import Path

import pytest

from flaretune.aggregation.secagg import (
    CONTROLLER_PATH, EXECUTOR_PATH, FILTER_PATH, PROTOCOL_TASKS, SecAggController, enable_secure_aggregation,
)
from flaretune.errors import ConfigError
from flaretune.jobcfg import DEQUANTIZE_FILTER, QUANTIZE_FILTER, JobFolder

JOBS = Path(__file__).resolve().parents[2] / "jobs"
DP = {"path": "flaretune.filters.dp.GaussianPrivacyFilter", "args": {"noise_multiplier": 0.5, "clip_norm": 0.25}}


def chain(config, kind, task):
    (entry,) = [e for e in config[kind] if task in e["tasks"]]  # FLARE takes one entry per task
    return [f["path"] for f in entry["filters"]]


@pytest.mark.parametrize("job", ["clinical_ner", "fin_instruct"])
def test_the_job_runs_the_secure_controller_and_every_site_masks_last(job, tmp_path):
    folder = JobFolder(JOBS / job)
    args = dict(folder.workflow_args)
    described = enable_secure_aggregation(folder, ["train"], threshold=2)
    assert described["result_quantization_removed"] == "float16" and described["threshold"] == 2
    assert folder.workflow()["path"] == CONTROLLER_PATH
    assert folder.workflow_args == {**args, "threshold": 2, "fraction_bits": 32, "modulus_bits": 64}
    assert {"tasks": PROTOCOL_TASKS, "executor": {"path": EXECUTOR_PATH, "args": {}}} in folder.client["executors"]
    assert chain(folder.client, "task_result_filters", "train") == [FILTER_PATH]
    assert chain(folder.client, "task_data_filters", "train") == [DEQUANTIZE_FILTER, FILTER_PATH]
    assert chain(folder.client, "task_result_filters", "validate") == [QUANTIZE_FILTER]  # untouched
    assert not [e for e in folder.server["task_result_filters"] if "train" in e["tasks"]]  # no dequantizer
    for task in PROTOCOL_TASKS:
        assert chain(folder.client, "task_result_filters", task) == [FILTER_PATH]
    assert chain(folder.server, "task_data_filters", "train") == [QUANTIZE_FILTER]  # the global model goes out float16
    JobFolder(folder.write(tmp_path / "job"))  # round-trips


def test_dp_stays_before_masking(tmp_path):
    folder = JobFolder(JOBS / "clinical_ner")
    (entry,) = folder.client["task_result_filters"]
    entry["tasks"].remove("train")
    folder.client["task_result_filters"].append({"tasks": ["train"], "filters": [DP] + entry["filters"]})
    enable_secure_aggregation(folder, ["train"])
    assert chain(folder.client, "task_result_filters", "train") == [DP["path"], FILTER_PATH]


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": ["*"]}, "name the training tasks"),
    ({"threshold": 1}, "threshold must be an int >= 2"),
    ({"modulus_bits": 16}, "modulus_bits must be one of"),
])
def test_bad_arguments_fail_with_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        enable_secure_aggregation(JobFolder(JOBS / "clinical_ner"), **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": 1}, "threshold must be 0"), ({"fraction_bits": 60}, "fraction_bits"),
    ({"dropout_wait": -1}, "dropout_wait"), ({"aggregator": "nope"}, "Invalid aggregator"),
])
def test_the_controller_checks_its_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SecAggController(**kwargs)
