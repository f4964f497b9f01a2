import numpy as np
import pytest

from flaretune.aggregation.ops import (
    AGGREGATORS,
    FedAdam,
    FedAvgM,
    ServerOptimizer,
    apply_diffs,
    make_server_optimizer,
    weighted_mean,
)
from flaretune.errors import ConfigError


def test_weighted_mean_weights_by_examples():
    a = {"w": np.array([1.0, 1.0]), "b": np.array([0.0])}
    b = {"w": np.array([4.0, 7.0]), "b": np.array([3.0])}
    mean = weighted_mean([(a, 1), (b, 2)])
    np.testing.assert_allclose(mean["w"], [3.0, 5.0])
    np.testing.assert_allclose(mean["b"], [2.0])


def test_weighted_mean_rejects_mismatched_names_and_zero_weights():
    with pytest.raises(ValueError, match="disagree"):
        weighted_mean([({"a": np.zeros(1)}, 1), ({"b": np.zeros(1)}, 1)])
    with pytest.raises(ValueError, match="positive"):
        weighted_mean([({"a": np.zeros(1)}, 0)])


def test_fedavg_step_returns_the_mean_and_keeps_dtype():
    x = {"w": np.array([1.0, 2.0], dtype=np.float32)}
    mean = {"w": np.array([3.0, -1.0])}
    new = ServerOptimizer().step(x, mean)
    np.testing.assert_allclose(new["w"], [3.0, -1.0])
    assert new["w"].dtype == np.float32


def test_apply_diffs_equals_mean_of_implied_models():
    x = {"w": np.array([1.0, 1.0])}
    diffs = [({"w": np.array([1.0, 0.0])}, 1), ({"w": np.array([-1.0, 3.0])}, 3)]
    implied = weighted_mean([({"w": x["w"] + d["w"]}, n) for d, n in diffs])
    np.testing.assert_allclose(apply_diffs(x, diffs)["w"], implied["w"])


def test_fedavgm_accumulates_momentum():
    opt = FedAvgM(server_lr=1.0, beta1=0.5)
    x = {"w": np.array([0.0])}
    x = opt.step(x, {"w": np.array([1.0])})  # g = -1, m = -1 -> x = 1
    np.testing.assert_allclose(x["w"], [1.0])
    x = opt.step(x, {"w": np.array([2.0])})  # g = -1, m = -1.5 -> x = 2.5
    np.testing.assert_allclose(x["w"], [2.5])


def test_fedadam_first_step_matches_reddi_et_al():
    opt = FedAdam(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    x = {"w": np.array([0.0, 0.0])}
    mean = {"w": np.array([1.0, -2.0])}
    g = x["w"] - mean["w"]
    m = 0.1 * g
    v = 0.01 * g * g
    expected = x["w"] - 0.1 * m / (np.sqrt(v) + 1e-3)
    np.testing.assert_allclose(opt.step(x, mean)["w"], expected)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_every_aggregator_moves_towards_the_clients(name):
    opt = make_server_optimizer(name, server_lr=0.5)
    x = {"w": np.array([0.0])}
    for _ in range(3):
        x = opt.step(x, {"w": np.array([1.0])})
    assert 0.0 < float(x["w"][0]) <= 2.0


def test_unknown_aggregator_lists_valid_names():
    with pytest.raises(ConfigError, match="valid: fedavg"):
        make_server_optimizer("fedsgd")
