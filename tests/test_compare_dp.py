"""``flaretune compare --dp-epsilon``: the federated sites' DP-SGD settings spend exactly the budget."""

import pytest

from flaretune.compare.run import DP_DELTA, DP_SAMPLE_RATE, _dp_sgd
from flaretune.privacy import epsilon_for


def test_the_noise_spends_the_budget_over_every_round():
    executor_args = {"local_epochs": 1, "learning_rate": 2e-3}
    dp = _dp_sgd(executor_args, rounds=10, epochs_per_round=1, epsilon=8.0)
    assert dp["steps_per_round"] == round(1 / DP_SAMPLE_RATE) == executor_args["max_steps"] == 20
    z = executor_args["train_step_args"]["noise_multiplier"]
    assert executor_args["train_step"] == "dpsgd" and executor_args["dp_epsilon_budget"] == 8.0
    spent = epsilon_for(z, DP_SAMPLE_RATE, 200, DP_DELTA)
    assert 7.99 <= spent <= 8.0, spent  # within noise_for_epsilon's 0.01, never above the budget
    assert epsilon_for(z, DP_SAMPLE_RATE, 220, DP_DELTA) > 8.0  # an 11th round would not fit
    assert dp["noise_multiplier"] == pytest.approx(z)
