"""clinical_ner / fin_instruct as asynchronous FedBuff jobs: ``job.py --fedbuff K`` and ``rounds=Buffered(...)``."""

import json

import pytest

from flaretune.errors import ConfigError
from flaretune.recipes import Buffered, ClinicalNerRecipe
from flaretune.recipes.cli import main

SERVER = "app/config/config_fed_server.json"


def test_job_py_fedbuff_exports_a_fedbuff_workflow_with_the_rounds_as_updates(tmp_path):
    assert main("clinical_ner", ["--fedbuff", "3", "--rounds", "12", "--aggregator", "fedadam",
                                 "--export", str(tmp_path / "job")]) == 0
    (workflow,) = json.loads((tmp_path / "job" / SERVER).read_text())["workflows"]
    assert workflow == {"id": "fedbuff", "path": "flaretune.aggregation.fedbuff.FedBuffController",
                        "args": {"num_updates": 12, "buffer_size": 3, "staleness": "sqrt", "aggregator": "fedadam",
                                 "persistor_id": "persistor"}}


def test_a_bad_fedbuff_argument_fails_when_the_recipe_is_built():
    with pytest.raises(ConfigError, match=r"Invalid staleness 'linear'; valid: constant, sqrt, poly"):
        ClinicalNerRecipe(rounds=Buffered(staleness="linear"))
    with pytest.raises(ConfigError, match=r"staleness_exponent must be a finite number >= 0, got -2"):
        ClinicalNerRecipe(rounds=Buffered(staleness="poly", extra={"staleness_exponent": -2}))
