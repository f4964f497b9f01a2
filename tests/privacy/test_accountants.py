"""Accountants: ε against Opacus for the same history, closed forms for the unsampled Gaussian, state round trip."""

import json
import math

import pytest
from opacus.accountants import PRVAccountant as OpacusPRV
from opacus.accountants import RDPAccountant as OpacusRDP
from scipy.optimize import brentq
from scipy.stats import norm

from flaretune.errors import ConfigError
from flaretune.privacy import epsilon_for, make_accountant, noise_for_epsilon

# three rounds of local DP-SGD steps: two with the same (z, q), one after the site changed its batch size
ROUNDS = [(1.1, 0.01, 40), (1.1, 0.01, 40), (0.9, 0.02, 25)]
DELTA = 1e-5


def opacus_epsilon(opacus_cls, rounds, delta):
    acc = opacus_cls()
    for z, q, n in rounds:
        for _ in range(n):
            acc.step(noise_multiplier=z, sample_rate=q)
    return acc.get_epsilon(delta=delta)


@pytest.mark.parametrize("name, opacus_cls", [("rdp", OpacusRDP), ("prv", OpacusPRV)])
def test_epsilon_equals_opacus_stepped_one_step_at_a_time(name, opacus_cls):
    acc = make_accountant(name)
    for z, q, n in ROUNDS:
        acc.step(z, q, steps=n)
    assert acc.history == [(1.1, 0.01, 80), (0.9, 0.02, 25)] and acc.steps == 105
    expected = opacus_epsilon(opacus_cls, ROUNDS, DELTA)
    assert expected > 0.5  # a history that spends something
    assert acc.get_epsilon(DELTA) == pytest.approx(expected, rel=0.01)


def test_rdp_of_the_unsampled_gaussian_is_the_closed_form():
    # q = 1: RDP of T Gaussian steps is T*alpha/(2 z^2) (Mironov 2017, Prop. 7), converted to (eps, delta)
    # with eps = rdp + log((a-1)/a) - (log delta + log a)/(a-1) at the best order (Balle et al. 2020)
    z, steps = 2.0, 10
    best = min(steps * a / (2 * z * z) + math.log((a - 1) / a) - (math.log(DELTA) + math.log(a)) / (a - 1)
               for a in OpacusRDP.DEFAULT_ALPHAS)
    assert epsilon_for(z, 1.0, steps, DELTA, "rdp") == pytest.approx(best, rel=1e-9)


def test_prv_of_the_unsampled_gaussian_is_the_analytic_gaussian_epsilon():
    # T unsampled Gaussian steps compose to one Gaussian with mu = sqrt(T)/z, whose exact privacy curve is
    # delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) (Balle & Wang 2018); PRV returns an upper
    # bound within its eps_error of 0.01
    z, steps = 2.0, 10
    mu = math.sqrt(steps) / z
    exact = brentq(lambda e: norm.cdf(-e / mu + mu / 2) - math.exp(e) * norm.cdf(-e / mu - mu / 2) - DELTA, 0, 50)
    got = epsilon_for(z, 1.0, steps, DELTA, "prv")
    assert exact <= got <= exact + 0.02
    assert got < epsilon_for(z, 1.0, steps, DELTA, "rdp")  # PRV is the tighter analysis


def test_state_dict_is_json_and_round_trips_into_either_accountant():
    acc = make_accountant("rdp")
    for z, q, n in ROUNDS:
        acc.step(z, q, n)
    state = json.loads(json.dumps(acc.state_dict()))
    assert state == {"version": 1, "mechanism": "rdp", "history": [[1.1, 0.01, 80], [0.9, 0.02, 25]]}
    back = make_accountant("rdp")
    back.load_state_dict(state)
    assert back.history == acc.history and back.get_epsilon(DELTA) == acc.get_epsilon(DELTA)
    prv = make_accountant("prv")
    prv.load_state_dict(state)
    assert prv.history == acc.history and prv.get_epsilon(DELTA) < acc.get_epsilon(DELTA)


def test_empty_history_spends_nothing():
    assert make_accountant("rdp").get_epsilon(DELTA) == 0.0 and make_accountant("prv").get_epsilon(DELTA) == 0.0


def test_noise_for_epsilon_reaches_the_target_from_below():
    z = noise_for_epsilon(3.0, 0.01, 500, DELTA)
    eps = epsilon_for(z, 0.01, 500, DELTA)
    assert 3.0 - 0.01 <= eps <= 3.0
    assert epsilon_for(z * 0.97, 0.01, 500, DELTA) > 3.0  # less noise would overspend


@pytest.mark.parametrize("call, message", [
    (lambda: make_accountant("gdp"), "Invalid accountant 'gdp'; valid: rdp, prv"),
    (lambda: make_accountant().step(0.0, 0.01), "noise_multiplier must be a finite number > 0, got 0.0"),
    (lambda: make_accountant().step(1.0, 0.0), r"sample_rate must be in \(0, 1\], got 0.0"),
    (lambda: make_accountant().step(1.0, 0.1, steps=2.5), "steps must be an int >= 1, got 2.5"),
    (lambda: make_accountant().get_epsilon(0.0), r"delta must be in \(0, 1\), got 0.0"),
    (lambda: make_accountant().load_state_dict({"version": 1, "history": [[1.0, 2.0, 3]]}),
     r"sample_rate must be in \(0, 1\], got 2.0"),
    (lambda: noise_for_epsilon(1e-9, 1.0, 10 ** 6, DELTA), "no noise multiplier reaches epsilon=1e-09"),
])
def test_bad_input_is_a_one_line_config_error(call, message):
    with pytest.raises(ConfigError, match=message) as err:
        call()
    assert "\n" not in str(err.value)
