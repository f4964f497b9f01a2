"""Strategy family: exact two-round updates by hand, saveable state, registry errors.

Every number below is a short binary fraction, so float64 computes it exactly and the tests compare with
``==``. In each FedOpt case the clients of a round are ``A = mean - 3d`` (weight 1) and ``B = mean + d``
(weight 3) with ``d = [1, -1]``, so ``0.25 A + 0.75 B = mean`` and ``g = x - mean`` is the pseudo-gradient
written next to the round. Hyperparameters: server_lr 0.5, beta1 0.5, beta2 0.75.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from flaretune import keys
from flaretune.aggregation.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedOpt,
    FedProx,
    FedYogi,
    Strategy,
    accepted_kwargs,
    flatten_state,
    make_strategy,
    register_strategy,
    strategy_kwargs,
    strategy_names,
    unflatten_state,
)
from flaretune.aggregation import strategy as strategy_module
from flaretune.errors import ConfigError

HYPER = {"server_lr": 0.5, "beta1": 0.5}


def _params(values):
    return {"w": np.array(values, dtype=np.float64)}


# (name, kwargs, rounds: [[(client values, weight), ...], ...], x after each round, moments after each round)
TWO_ROUND_CASES = [
    pytest.param(
        "fedavg", {},
        # mean1 = 0.25*[2,3] + 0.75*[6,-1] = [5,0];  mean2 = 0.75*[1,8] + 0.25*[5,0] = [2,6]
        [[([2, 3], 1), ([6, -1], 3)], [([1, 8], 3), ([5, 0], 1)]],
        [[5, 0], [2, 6]],
        [{}, {}],
        id="fedavg-unequal-weights",
    ),
    pytest.param(
        "fedprox", {"mu": 0.01},
        [[([2, 3], 1), ([6, -1], 3)], [([1, 8], 3), ([5, 0], 1)]],
        [[5, 0], [2, 6]],
        [{}, {}],
        id="fedprox-is-fedavg-on-the-server",
    ),
    pytest.param(
        # g1 = [-4,2]: m1 = g1, x1 = 0 - 0.5*m1 = [2,-1]
        # g2 = [2,2]:  m2 = 0.5*[-4,2] + [2,2] = [0,3], x2 = [2,-1] - 0.5*[0,3] = [2,-2.5]
        "fedavgm", HYPER,
        [[([1, 1], 1), ([5, -3], 3)], [([-3, 0], 1), ([1, -4], 3)]],
        [[2, -1], [2, -2.5]],
        [{"m": [-4, 2]}, {"m": [0, 3]}],
        id="fedavgm",
    ),
    pytest.param(
        # tau 3.  g1 = [-3,5]: m1 = [-1.5,2.5], v1 = g1^2 = [9,25], step m1/(sqrt(v1)+3) = [-1/4, 5/16],
        #   x1 = -0.5*step = [0.125,-0.15625]
        # g2 = [-4,12]: m2 = 0.5*m1 + 0.5*g2 = [-2.75,7.25], v2 = v1 + g2^2 = [25,169],
        #   step = [-2.75/8, 7.25/16] = [-11/32, 29/64], x2 = x1 - 0.5*step = [0.296875,-0.3828125]
        "fedadagrad", {**HYPER, "tau": 3.0},
        [[([0, -2], 1), ([4, -6], 3)], [([1.125, -9.15625], 1), ([5.125, -13.15625], 3)]],
        [[0.125, -0.15625], [0.296875, -0.3828125]],
        [{"m": [-1.5, 2.5], "v": [9, 25]}, {"m": [-2.75, 7.25], "v": [25, 169]}],
        id="fedadagrad",
    ),
    pytest.param(
        # tau 5.  g1 = [-10,6]: m1 = [-5,3], v1 = 0.25*g1^2 = [25,9], step = [-5/10, 3/8], x1 = [0.25,-0.1875]
        # g2 = [11,3]: m2 = [-2.5+5.5, 1.5+1.5] = [3,3], v2 = 0.75*v1 + 0.25*g2^2 = [18.75+30.25, 6.75+2.25]
        #   = [49,9], step = [3/12, 3/8], x2 = [0.25-0.125, -0.1875-0.1875] = [0.125,-0.375]
        "fedadam", {**HYPER, "beta2": 0.75, "tau": 5.0},
        [[([7, -3], 1), ([11, -7], 3)], [([-13.75, -0.1875], 1), ([-9.75, -4.1875], 3)]],
        [[0.25, -0.1875], [0.125, -0.375]],
        [{"m": [-5, 3], "v": [25, 9]}, {"m": [3, 3], "v": [49, 9]}],
        id="fedadam",
    ),
    pytest.param(
        # tau 5.  g1 = [-6,10]: v1 = 0 - 0.25*g1^2*sign(0 - g1^2) = [9,25], m1 = [-3,5], step = [-3/8, 5/10],
        #   x1 = [0.1875,-0.25]
        # g2 = [8,5]: v2 = v1 - 0.25*g2^2*sign(v1 - g2^2) = [9+16, 25 - 6.25*0] = [25,25] (equal: v kept),
        #   m2 = [-1.5+4, 2.5+2.5] = [2.5,5], step = [2.5/10, 5/10], x2 = [0.0625,-0.5]
        "fedyogi", {**HYPER, "beta2": 0.75, "tau": 5.0},
        [[([3, -7], 1), ([7, -11], 3)], [([-10.8125, -2.25], 1), ([-6.8125, -6.25], 3)]],
        [[0.1875, -0.25], [0.0625, -0.5]],
        [{"m": [-3, 5], "v": [9, 25]}, {"m": [2.5, 5], "v": [25, 25]}],
        id="fedyogi",
    ),
]


def _run_round(strategy, x, clients):
    return strategy.aggregate(x, [(_params(values), weight) for values, weight in clients])


def _moments(strategy):
    return {moment: tensors["w"].tolist() for moment, tensors in strategy.state_dict()["moments"].items()}


@pytest.mark.parametrize("name, kwargs, rounds, expected_x, expected_moments", TWO_ROUND_CASES)
def test_two_rounds_match_hand_computation(name, kwargs, rounds, expected_x, expected_moments):
    strategy = make_strategy(name, **kwargs)
    x = _params([0, 0])
    for round_number, clients in enumerate(rounds):
        x = _run_round(strategy, x, clients)
        assert x["w"].tolist() == expected_x[round_number]
        assert _moments(strategy) == expected_moments[round_number]
    assert strategy.state_dict()["step"] == 2


def test_fedyogi_shrinks_v_when_it_exceeds_g_squared():
    # v = 169 > g^2 = 100: v <- 169 - 0.25*100 = 144; m = 0.5*10 = 5; step 5/(12+4); x = 0 - 0.5*5/16
    strategy = make_strategy("fedyogi", **HYPER, beta2=0.75, tau=4.0)
    strategy.load_state_dict({"name": "fedyogi", "step": 1, "moments": {"m": {"w": [0.0]}, "v": {"w": [169.0]}}})
    x = strategy.aggregate({"w": np.array([0.0])}, [({"w": np.array([-10.0])}, 1)])
    assert x["w"].tolist() == [-0.15625]
    assert _moments(strategy) == {"m": [5.0], "v": [144.0]}


def test_fedadam_first_step_with_reddi_defaults():
    # Reddi et al., Alg. 2 with beta1 0.9, beta2 0.99, tau 1e-3, server_lr 1, from m = v = 0: g = 0 - 1
    g = -1.0
    m = 0.9 * 0.0 + (1 - 0.9) * g
    v = 0.99 * 0.0 + (1 - 0.99) * g * g
    strategy = make_strategy("fedadam")
    x = strategy.aggregate({"w": np.array([0.0])}, [({"w": np.array([1.0])}, 1)])
    assert x["w"].tolist() == [0.0 - 1.0 * (m / (math.sqrt(v) + 1e-3))]
    assert _moments(strategy) == {"m": [m], "v": [v]}


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedadam"])
def test_aggregate_returns_each_global_tensors_dtype(name):
    x = {"w": np.zeros(2, dtype=np.float32), "n": np.zeros(1, dtype=np.float64)}
    clients = [({"w": np.ones(2, dtype=np.float32), "n": np.ones(1)}, 1)]
    new = make_strategy(name).aggregate(x, clients)
    assert (new["w"].dtype, new["n"].dtype) == (np.float32, np.float64)


# ---- state ----
@pytest.mark.parametrize("name, kwargs, rounds, expected_x, expected_moments", TWO_ROUND_CASES)
def test_state_restored_after_round_one_gives_the_same_round_two(name, kwargs, rounds, expected_x, expected_moments,
                                                                 tmp_path):
    from safetensors.numpy import load_file, save_file

    original = make_strategy(name, **kwargs)
    x1 = _run_round(original, _params([0, 0]), rounds[0])
    meta, arrays = flatten_state(original.state_dict())
    (tmp_path / "state.json").write_text(json.dumps(meta))
    save_file(arrays, str(tmp_path / "state.safetensors"))

    restored = make_strategy(name, **kwargs)
    restored.load_state_dict(unflatten_state(json.loads((tmp_path / "state.json").read_text()),
                                             load_file(str(tmp_path / "state.safetensors"))))
    assert _moments(restored) == _moments(original)
    assert _run_round(restored, x1, rounds[1])["w"].tolist() == _run_round(original, x1, rounds[1])["w"].tolist()
    assert restored.state_dict()["step"] == original.state_dict()["step"] == 2


def test_state_dict_is_a_copy():
    strategy = make_strategy("fedadam")
    strategy.aggregate({"w": np.zeros(1)}, [({"w": np.ones(1)}, 1)])
    saved = strategy.state_dict()
    before = saved["moments"]["m"]["w"].copy()
    strategy.aggregate({"w": np.zeros(1)}, [({"w": np.ones(1)}, 1)])
    assert saved["moments"]["m"]["w"].tolist() == before.tolist() != strategy.state_dict()["moments"]["m"]["w"].tolist()


def test_state_dict_meta_says_what_wrote_it():
    meta, arrays = flatten_state(make_strategy("fedyogi", tau=0.5).state_dict())
    assert json.loads(json.dumps(meta)) == {
        "name": "fedyogi", "step": 0, "config": {"server_lr": 1.0, "beta1": 0.9, "beta2": 0.99, "tau": 0.5},
        "moments": {}, "num_examples": {},
    }
    assert arrays == {}


def test_flatten_and_unflatten_round_trip():
    state = {"name": "x", "step": np.int64(3), "moments": {"m": {"lora_A.weight": np.arange(4.0).reshape(2, 2)}},
             "history": [np.array([1, 2], dtype=np.int32), 0.5]}
    meta, arrays = flatten_state(state)
    assert sorted(arrays) == ["history/0", "moments/m/lora_A.weight"]
    back = unflatten_state(json.loads(json.dumps(meta)), arrays)
    assert back["step"] == 3 and back["history"][1] == 0.5
    np.testing.assert_array_equal(back["moments"]["m"]["lora_A.weight"], state["moments"]["m"]["lora_A.weight"])
    assert back["history"][0].dtype == np.int32


@pytest.mark.parametrize("state, message", [
    ({"a/b": np.zeros(1), "a": {"b": np.zeros(1)}}, "same key 'a/b'"),
    ({1: np.zeros(1)}, "keys must be strings"),
])
def test_flatten_refuses_ambiguous_states(state, message):
    with pytest.raises(ValueError, match=message):
        flatten_state(state)


def test_unflatten_names_a_missing_array():
    with pytest.raises(ValueError, match="'moments/m/w'"):
        unflatten_state({"m": {"__array__": "moments/m/w"}}, {})


def test_loading_another_strategys_state_fails_clearly():
    with pytest.raises(ConfigError, match="for aggregator 'fedadam', this job runs 'fedyogi'"):
        make_strategy("fedyogi").load_state_dict(make_strategy("fedadam").state_dict())


# ---- registry ----
def test_registered_names():
    assert strategy_names()[:6] == ["fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam", "fedyogi"]


@pytest.mark.parametrize("cls, expected", [
    (FedAvg, []),
    (FedProx, ["mu"]),
    (FedAvgM, ["server_lr", "beta1"]),
    (FedAdagrad, ["server_lr", "beta1", "tau"]),
    (FedAdam, ["server_lr", "beta1", "beta2", "tau"]),
    (FedYogi, ["server_lr", "beta1", "beta2", "tau"]),
])
def test_each_strategy_takes_only_its_own_parameters(cls, expected):
    assert accepted_kwargs(cls) == expected
    assert issubclass(cls, FedOpt) == (cls not in (FedAvg, FedProx))


@pytest.mark.parametrize("name, defaults", [
    ("fedavgm", {"server_lr": 1.0, "beta1": 0.9}),
    ("fedadagrad", {"server_lr": 1.0, "beta1": 0.9, "tau": 1e-3}),
    ("fedadam", {"server_lr": 1.0, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}),
])
def test_fedopt_defaults_are_todays(name, defaults):
    assert make_strategy(name).config() == defaults


@pytest.mark.parametrize("name, kwargs, message", [
    ("fedsgd", {}, "Invalid aggregator 'fedsgd'; valid: fedavg, fedprox, fedavgm, fedadagrad, fedadam, fedyogi"),
    ("fedavg", {"server_lr": 1.0}, "aggregator 'fedavg' takes no argument 'server_lr'; valid: none"),
    ("fedadagrad", {"beta2": 0.9}, "aggregator 'fedadagrad' takes no argument 'beta2'; valid: server_lr, beta1, tau"),
    ("fedprox", {"fedprox_mu": 0.1}, "aggregator 'fedprox' takes no argument 'fedprox_mu'; valid: mu"),
    ("fedprox", {}, "mu must be > 0 for aggregator 'fedprox'"),
    ("fedprox", {"mu": 0.0}, "mu must be > 0"),
    ("fedprox", {"mu": -0.1}, "mu must be > 0"),
    ("fedprox", {"mu": "0.1"}, "mu must be > 0"),
    ("fedadam", {"server_lr": 0}, "server_lr must be a number > 0, got 0"),
    ("fedadam", {"beta1": 1.0}, r"beta1 must be in \[0, 1\), got 1.0"),
    ("fedyogi", {"beta2": True}, r"beta2 must be in \[0, 1\), got True"),
    ("fedadam", {"tau": 0.0}, "tau must be a number > 0"),
    ("fedavgm", {"server_lr": float("nan")}, "server_lr must be a number > 0, got nan"),
])
def test_bad_configuration_fails_with_one_line(name, kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        make_strategy(name, **kwargs)
    assert "\n" not in str(err.value)


def test_strategy_kwargs_picks_what_the_named_strategy_takes():
    controller_args = {"server_lr": 0.5, "beta1": 0.8, "beta2": 0.9, "tau": 0.01, "fedprox_mu": 0.1}
    assert strategy_kwargs("fedavg", **controller_args) == {}
    assert strategy_kwargs("fedprox", **controller_args) == {"mu": 0.1}
    assert strategy_kwargs("fedavgm", **controller_args) == {"server_lr": 0.5, "beta1": 0.8}
    assert strategy_kwargs("fedadagrad", **controller_args) == {"server_lr": 0.5, "beta1": 0.8, "tau": 0.01}
    assert make_strategy("fedyogi", **strategy_kwargs("fedyogi", **controller_args)).config() == {
        "server_lr": 0.5, "beta1": 0.8, "beta2": 0.9, "tau": 0.01}
    with pytest.raises(ConfigError, match="Invalid aggregator 'nope'"):
        strategy_kwargs("nope", **controller_args)


def test_register_strategy_adds_a_name(monkeypatch):
    monkeypatch.setattr(strategy_module, "_STRATEGIES", dict(strategy_module._STRATEGIES))

    class Halfway(FedOpt):
        name = "halfway"

        def direction(self, name, gradient):
            return 0.5 * gradient

    register_strategy("halfway", Halfway)
    new = make_strategy("halfway", server_lr=1.0).aggregate(_params([0.0]), [(_params([4.0]), 1)])
    assert new["w"].tolist() == [2.0]
    with pytest.raises(ConfigError, match="valid: .*fedyogi, halfway"):
        make_strategy("x")
    for bad in (dict, Strategy, FedOpt):
        with pytest.raises(TypeError, match="concrete Strategy subclass"):
            register_strategy("bad", bad)


# ---- configure_round ----
@pytest.mark.parametrize("strategy, meta", [
    (FedAvg(), {}),
    (FedAdam(), {}),
    (FedProx(mu=0.01), {"fedprox_mu": 0.01}),
])
def test_configure_round_selects_every_client_in_order(strategy, meta):
    clients = ["site-2", "site-1", "site-3"]
    selected, task_meta = strategy.configure_round(0, clients, np.random.default_rng(0))
    assert (selected, task_meta) == (clients, meta)
    assert selected is not clients


def test_fedprox_mu_travels_under_the_shared_key():
    _, meta = make_strategy("fedprox", mu=0.05).configure_round(3, ["a"], np.random.default_rng(1))
    assert keys.FEDPROX_MU == "fedprox_mu" and meta == {keys.FEDPROX_MU: 0.05}


def test_core_imports_neither_flare_nor_torch():
    code = ("import sys, flaretune.aggregation.strategy, flaretune.aggregation.validation, flaretune.keys; "
            "print([m for m in sys.modules if m.split('.')[0] in ('nvflare', 'torch')])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
