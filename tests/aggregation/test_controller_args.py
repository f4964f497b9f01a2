"""FedAggController's dropout settings: validated at construction and exported by FLARE's Job API."""

import pytest

from flaretune.errors import ConfigError


def test_the_job_api_exports_the_deadline_and_the_wait():
    from nvflare.job_config.fed_job_config import FedJobConfig

    from flaretune.aggregation.controller import FedAggController

    controller = FedAggController(num_rounds=3, min_clients=2, train_timeout=30, min_clients_wait=12.5)
    args = FedJobConfig(job_name="j", min_clients=2)._get_args(controller, "")
    assert args == {"num_rounds": 3, "min_clients": 2, "train_timeout": 30, "min_clients_wait": 12.5}


@pytest.mark.parametrize("name, value", [("train_timeout", -1), ("train_timeout", "10"), ("min_clients_wait", -0.5),
                                         ("min_clients_wait", True)])
def test_a_negative_or_non_numeric_time_is_refused_with_its_name(name, value):
    from flaretune.aggregation.controller import FedAggController

    with pytest.raises(ConfigError, match=f"^{name} must be a number of seconds >= 0, got {value!r}$"):
        FedAggController(**{name: value})
