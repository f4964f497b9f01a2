"""Seeded client sampling (flaretune.aggregation.sampling) and sites joining and leaving between rounds,
driven through the one round loop by a stand-in for a FLARE controller."""

import numpy as np
import pytest

from flaretune.aggregation.checkpoint import Checkpoint
from flaretune.aggregation.rounds import MemoryStore, RoundDriver, RoundSettings, SiteResult, run_rounds
from flaretune.aggregation.sampling import ClientSampling, site_probabilities
from flaretune.aggregation.strategy import make_strategy
from flaretune.errors import ConfigError

SITES = [f"site-{i}" for i in range(1, 6)]


@pytest.mark.parametrize("sampling, n, k", [
    (ClientSampling(), 5, 5),
    (ClientSampling(sample_fraction=0.5), 5, 3),  # ceil(2.5)
    (ClientSampling(sample_fraction=0.2), 10, 2),
    (ClientSampling(sample_fraction=0.2, min_clients=3), 10, 3),  # never fewer than min_clients
    (ClientSampling(sample_count=2, sample_fraction=0.1), 5, 2),  # the count wins over the fraction
    (ClientSampling(sample_count=10), 3, 3),  # never more than are available
    (ClientSampling(sample_fraction=0.01), 3, 1),
    (ClientSampling(sample_count=2), 0, 0),
])
def test_how_many_sites_a_round_selects(sampling, n, k):
    assert sampling.how_many(n) == k


def test_a_uniform_draw_is_numpys_seeded_choice_in_the_order_given():
    rng = np.random.default_rng(7)
    picked = np.random.default_rng(7).choice(5, size=3, replace=False)
    assert ClientSampling(sample_count=3).select(SITES, rng) == [SITES[i] for i in sorted(picked)]
    assert rng.bit_generator.state == _after(7, lambda r: r.choice(5, size=3, replace=False))


def test_selecting_everyone_draws_nothing_from_the_rng():
    rng = np.random.default_rng(1)
    before = rng.bit_generator.state
    assert ClientSampling(sample_count=5).select(SITES, rng) == SITES
    assert ClientSampling(sample_fraction=0.2, min_clients=5).select(SITES, rng) == SITES
    assert rng.bit_generator.state == before


def test_weighted_probabilities_use_the_last_reported_sizes_and_the_mean_for_unseen_sites():
    p = site_probabilities(["a", "b", "c"], {"a": 100, "b": 300, "gone": 5000})
    assert p.tolist() == pytest.approx([1 / 6, 3 / 6, 2 / 6], abs=0, rel=1e-15)  # c gets mean(100, 300)
    assert site_probabilities(["a", "b"], {}).tolist() == [0.5, 0.5]
    sizes = {"site-1": 10, "site-2": 10, "site-3": 10, "site-4": 970}
    picked = ClientSampling(sample_count=1, sampling="weighted").select(list(sizes), np.random.default_rng(0), sizes)
    expected = np.random.default_rng(0).choice(4, size=1, replace=False, p=[0.01, 0.01, 0.01, 0.97])
    assert picked == [list(sizes)[int(expected[0])]] == ["site-4"]


@pytest.mark.parametrize("kwargs, message", [
    ({"sample_fraction": 0}, "sample_fraction must be a number in (0, 1], got 0"),
    ({"sample_fraction": 1.5}, "sample_fraction must be a number in (0, 1], got 1.5"),
    ({"sample_fraction": float("nan")}, "sample_fraction must be a number in (0, 1], got nan"),
    ({"sample_fraction": True}, "sample_fraction must be a number in (0, 1], got True"),
    ({"sample_count": 0}, "sample_count must be an integer >= 1 (or null for sample_fraction), got 0"),
    ({"sample_count": 2.5}, "sample_count must be an integer >= 1 (or null for sample_fraction), got 2.5"),
    ({"sampling": "random"}, "Invalid sampling 'random'; valid: uniform, weighted"),
])
def test_bad_sampling_settings_are_one_line_errors_naming_the_field(kwargs, message):
    with pytest.raises(ConfigError) as err:
        ClientSampling(**kwargs)
    assert str(err.value) == message


def test_the_controller_refuses_bad_sampling_and_exports_only_what_was_set():
    from nvflare.job_config.fed_job_config import FedJobConfig

    from flaretune.aggregation.controller import FedAggController

    with pytest.raises(ConfigError, match=r"^sample_count must be an integer >= 1"):
        FedAggController(sample_count=0)
    with pytest.raises(ConfigError, match=r"^Invalid sampling 'size'; valid: uniform, weighted$"):
        FedAggController(sampling="size")
    controller = FedAggController(num_rounds=3, sample_fraction=0.5, sampling="weighted")
    args = FedJobConfig(job_name="j", min_clients=2)._get_args(controller, "")
    assert args == {"num_rounds": 3, "sample_fraction": 0.5, "sampling": "weighted"}
    assert FedJobConfig(job_name="j", min_clients=2)._get_args(FedAggController(num_rounds=3), "") == {"num_rounds": 3}


def _after(seed, draw):
    rng = np.random.default_rng(seed)
    draw(rng)
    return rng.bit_generator.state


class Federation(RoundDriver):
    """Sites answer ``x + offset`` with their example count; ``present(r)`` is who is connected at round r."""

    def __init__(self, present, counts=None, stop_after=None):
        self.present, self.stop_after = present, stop_after
        self.counts = counts or {}
        self.sent, self.log, self.failed = [], [], None

    def available_clients(self):
        return sorted(self.present(len(self.sent)))

    def train(self, round_number, sites, global_model, meta):
        self.sent.append(list(sites))
        here = self.present(round_number)
        return {s: SiteResult({"w": global_model["w"] + np.float32(int(s[-1]))}, self.counts.get(s, 10))
                for s in sites if s in here}

    def publish(self, global_model, round_number, final):
        return f"round-{round_number}"

    def aborted(self):
        return self.stop_after is not None and len(self.sent) > self.stop_after

    def info(self, message):
        self.log.append(message)

    warn = info

    def fail(self, message):
        self.failed = message


X0 = {"w": np.zeros(2, dtype=np.float32)}


def _run(driver, tmp_path, rounds, sampling, checkpoint=None, resume=None, name="h.json", aggregator="fedadam"):
    strategy = make_strategy(aggregator, sampling=sampling)
    return run_rounds(driver, MemoryStore(), strategy, RoundSettings(rounds, min_clients=sampling.min_clients, seed=5),
                      dict(X0), tmp_path / name, checkpoint, resume)


@pytest.mark.parametrize("mode", ["uniform", "weighted"])
def test_a_resumed_job_samples_exactly_what_an_uninterrupted_one_does(tmp_path, mode):
    sampling = ClientSampling(sample_count=2, sampling=mode)
    counts = {"site-1": 10, "site-2": 40, "site-3": 20, "site-4": 80, "site-5": 5}
    whole = Federation(lambda r: SITES, counts)
    model, history = _run(whole, tmp_path, 6, sampling)
    # the rounds' selections are the seeded draws, one per round, from one RNG
    rng, strategy, expected = np.random.default_rng(5), make_strategy("fedavg", sampling=sampling), []
    for r in range(6):
        expected.append(strategy.configure_round(r, SITES, rng)[0])
        strategy.observe({s: counts[s] for s in expected[-1]})
    assert whole.sent == expected == [r["selected"] for r in history["rounds"]]
    assert len({tuple(s) for s in whole.sent}) > 1  # not the same two sites every round

    first = Federation(lambda r: SITES, counts, stop_after=3)
    _run(first, tmp_path, 6, sampling, Checkpoint(tmp_path / "ck"), name="a.json")
    saved = Checkpoint(tmp_path / "ck").load(MemoryStore())
    assert saved["round"] == 2 and first.sent[:3] == whole.sent[:3]
    second = Federation(lambda r: SITES, counts)
    resumed, _ = _run(second, tmp_path, 6, sampling, Checkpoint(tmp_path / "ck"), saved, name="b.json")
    assert second.sent == whole.sent[3:]
    assert resumed["w"].tolist() == model["w"].tolist()


def test_a_site_that_joins_is_selected_from_the_next_round_and_one_that_leaves_is_not_waited_for(tmp_path):
    def present(r):  # site-3 joins before round 2; site-2 is gone from round 3
        return ["site-1"] + (["site-2"] if r < 3 else []) + (["site-3"] if r >= 2 else [])

    driver = Federation(present)
    model, history = _run(driver, tmp_path, 5, ClientSampling(min_clients=2), aggregator="fedavg")
    assert driver.failed is None and model is not None
    assert driver.sent == [["site-1", "site-2"], ["site-1", "site-2"], ["site-1", "site-2", "site-3"],
                           ["site-1", "site-3"], ["site-1", "site-3"]]
    assert [sorted(r["sites"]) for r in history["rounds"]] == driver.sent
    # FedAvg of equal counts: each round adds the mean of the sites' numbers
    assert model["w"].tolist() == [1.5 + 1.5 + 2 + 2 + 2] * 2


def test_too_few_sites_left_stop_the_job_with_the_min_clients_message(tmp_path):
    driver = Federation(lambda r: ["site-1", "site-2"] if r < 1 else ["site-1"])
    model, history = _run(driver, tmp_path, 3, ClientSampling(min_clients=2), aggregator="fedavg")
    assert model is None and len(history["rounds"]) == 1
    assert driver.failed == "round 2/3: 1 result(s) accepted, 2 needed (min_clients); only 1 site(s) connected: site-1"


def test_a_result_without_an_example_count_keeps_the_sites_last_known_one():
    """Secure aggregation drops num_examples from each result: observing it must neither fail nor erase."""
    strategy = make_strategy("fedavg")
    strategy.observe({"site-1": 10, "site-2": 4})
    strategy.observe({"site-1": None, "site-2": 6, "site-3": None})
    assert strategy.num_examples == {"site-1": 10.0, "site-2": 6.0}
