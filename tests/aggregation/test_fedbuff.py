"""FedBuff's math and loop (flaretune.aggregation.buffer / asyncrounds) with exact numbers, driven by
in-memory sites on a virtual clock: a slow site never holds the fast ones back and its stale results are
down-weighted by 1/sqrt(1+s)."""

import heapq
import math

import numpy as np
import pytest

from flaretune.aggregation.asyncrounds import AsyncDriver, BufferSettings, run_buffered
from flaretune.aggregation.buffer import Buffered, apply_buffer, scaled_models, staleness_weight
from flaretune.aggregation.checkpoint import Checkpoint
from flaretune.aggregation.rounds import MemoryStore, SiteResult
from flaretune.aggregation.strategy import make_strategy
from flaretune.errors import ConfigError


@pytest.mark.parametrize("name, exponent, expected", [
    ("constant", 0.5, [1.0, 1.0, 1.0, 1.0]),
    ("sqrt", 0.5, [1.0, 1 / math.sqrt(2), 1 / math.sqrt(3), 0.5]),
    ("poly", 1.0, [1.0, 0.5, 1 / 3, 0.25]),
    ("poly", 2.0, [1.0, 0.25, 1 / 9, 1 / 16]),
])
def test_staleness_weights(name, exponent, expected):
    weight = staleness_weight(name, exponent)
    assert [weight(s) for s in range(4)] == expected


def test_bad_staleness_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^Invalid staleness 'linear'; valid: constant, sqrt, poly$"):
        staleness_weight("linear")
    with pytest.raises(ConfigError, match=r"^staleness_exponent must be a finite number >= 0, got -1$"):
        staleness_weight("poly", -1)


def test_a_stale_result_moves_the_model_by_its_weighted_change_from_the_model_it_trained_from():
    x_t = {"w": np.array([1.0, 1.0], dtype=np.float32)}
    fresh = Buffered("a", {"w": np.array([2.0, 1.0], np.float32)}, x_t, 1, trained_from=3)
    # trained from x_0 = [0, 0] (staleness 3, weight 1/sqrt(4) = 0.5), reached [0, 4]: change [0, 4]
    stale = Buffered("b", {"w": np.array([0.0, 4.0], np.float32)}, {"w": np.zeros(2, np.float32)}, 3, trained_from=0)
    weight = staleness_weight("sqrt")
    scaled = scaled_models(x_t, [fresh, stale], 3, weight)
    assert [(s, f) for _, _, s, f in scaled] == [(0, 1.0), (3, 0.5)]
    assert scaled[1][0]["w"].tolist() == [1.0, 3.0]  # x_t + 0.5 * [0, 4]
    new, used, rejected = apply_buffer(make_strategy("fedavg"), x_t, [fresh, stale], 3, weight)
    # example-weighted mean of [2, 1] (n 1) and [1, 3] (n 3): [1.25, 2.5]
    assert new["w"].tolist() == [1.25, 2.5] and new["w"].dtype == np.float32 and rejected == {}
    assert [(u["site"], u["staleness"], u["weight"], u["num_examples"]) for u in used] == [
        ("a", 0, 1.0, 1), ("b", 3, 0.5, 3)]


class VirtualSites(AsyncDriver):
    """Site ``i`` takes ``durations[site]`` virtual seconds per task and answers ``x + target - x`` scaled by
    ``rate`` (one local step towards ``target``); :meth:`next_result` jumps the clock to the next finish."""

    def __init__(self, durations, target, rate=0.5, counts=None, stop_after=None):
        self.durations, self.target, self.rate = durations, np.asarray(target, np.float64), rate
        self.counts = counts or {}
        self.clock, self.events, self.sent, self.log = 0.0, [], [], []
        self.stop_after, self.updates = stop_after, 0

    def available_clients(self):
        return sorted(self.durations)

    def dispatch(self, site, version, global_model, meta):
        self.sent.append((self.clock, site, version))
        w = global_model["w"].astype(np.float64)
        local = (w + self.rate * (self.target - w)).astype(np.float32)
        heapq.heappush(self.events, (self.clock + self.durations[site], site, local))

    def next_result(self, timeout):
        if not self.events:
            return None
        self.clock, site, local = heapq.heappop(self.events)
        return site, SiteResult({"w": local}, self.counts.get(site, 1))

    def publish(self, global_model, round_number, final):
        self.updates += 1
        return f"update-{round_number}"

    def aborted(self):
        return self.stop_after is not None and self.updates >= self.stop_after

    def info(self, message):
        self.log.append(message)

    warn = info

    def fail(self, message):
        raise AssertionError(message)


X0 = {"w": np.zeros(2, dtype=np.float32)}
TARGET = [1.0, -1.0]
DURATIONS = {"site-1": 1.0, "site-2": 1.0, "slow": 3.5}


def _run(driver, tmp_path, updates=8, aggregator="fedavg", checkpoint=None, resume=None, name="h.json", **kw):
    settings = BufferSettings(updates, 2, staleness_weight("sqrt"), "sqrt")
    return run_buffered(driver, MemoryStore(), make_strategy(aggregator, **kw), settings, dict(X0),
                        tmp_path / name, checkpoint, resume)


def test_the_fast_sites_never_wait_for_the_slow_one_and_its_stale_results_are_down_weighted(tmp_path):
    driver = VirtualSites(DURATIONS, TARGET)
    model, history = _run(driver, tmp_path)
    # a site is given its next task at the moment its result arrives: at t = 1, 2, 3, ... for the fast sites
    fast = [(t, v) for t, s, v in driver.sent if s == "site-1"]
    assert [t for t, _ in fast] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert [t for t, s, _ in driver.sent if s == "slow"] == [0.0, 3.5]  # the job ends with its 2nd result
    # its first result arrives at t=3.5, trained from update 0 when the model is at update 3: staleness 3,
    # weight 1/sqrt(4); its second, trained from 3, closes update 8 (index 7): staleness 4, weight 1/sqrt(5)
    used = [[(e["site"], e["trained_from"], e["staleness"], e["weight"]) for e in r["sites"]]
            for r in history["rounds"]]
    assert used[3] == [("slow", 0, 3, 0.5), ("site-1", 2, 1, 1 / math.sqrt(2))]
    assert used[7] == [("site-2", 6, 1, 1 / math.sqrt(2)), ("slow", 3, 4, 1 / math.sqrt(5))]
    assert used[0] == [("site-1", 0, 0, 1.0), ("site-2", 0, 0, 1.0)]
    assert [r["round"] for r in history["rounds"]] == list(range(8))
    assert [(d["site"], d["version"]) for d in history["dispatches"]] == [(s, v) for _, s, v in driver.sent]
    # it converges: from [0, 0] to within 0.02 of the target [1, -1]
    assert np.abs(model["w"] - np.float32(TARGET)).max() < 0.02


def test_fedadam_runs_asynchronously_through_the_same_strategy(tmp_path):
    model, history = _run(VirtualSites(DURATIONS, TARGET), tmp_path, updates=100, aggregator="fedadam",
                          server_lr=0.1)
    assert history["strategy"] == "fedadam" and len(history["rounds"]) == 100
    assert np.abs(model["w"] - np.float32(TARGET)).max() < 0.05  # Adam's steps of ~server_lr, from [0, 0]


def test_a_bad_result_is_rejected_against_the_model_it_trained_from_and_the_job_goes_on(tmp_path):
    class Bad(VirtualSites):
        def next_result(self, timeout):
            site, result = super().next_result(timeout)
            if site == "slow":
                result.update["w"] = np.full(2, np.nan, np.float32)
            return site, result

    model, history = _run(Bad(DURATIONS, TARGET), tmp_path, updates=4)
    assert history["rejected"] == [{"site": "slow", "trained_from": 0,
                                    "reason": "tensor 'w' has 2 non-finite value(s) (NaN or Inf)"}]
    assert all(e["site"] != "slow" for r in history["rounds"] for e in r["sites"])
    assert np.isfinite(model["w"]).all()


def test_a_resumed_fedbuff_job_continues_from_its_last_update(tmp_path):
    whole, _ = _run(VirtualSites(DURATIONS, TARGET), tmp_path, updates=6, aggregator="fedadam", server_lr=0.1)
    first = VirtualSites(DURATIONS, TARGET, stop_after=3)
    _run(first, tmp_path, 6, "fedadam", Checkpoint(tmp_path / "ck"), name="a.json", server_lr=0.1)
    saved = Checkpoint(tmp_path / "ck").load(MemoryStore())
    assert saved["round"] == 2 and saved["strategy"]["step"] == 3
    first_rounds = [dict(r) for r in saved["history"]["rounds"]]
    model, history = _run(VirtualSites(DURATIONS, TARGET), tmp_path, 6, "fedadam", Checkpoint(tmp_path / "ck"),
                          saved, name="b.json", server_lr=0.1)
    assert [r["round"] for r in history["rounds"]] == [0, 1, 2, 3, 4, 5]
    assert history["resumed"][0]["after_round"] == 2 and history["resumed"][0]["strategy_step"] == 3
    # with an empty buffer and idle sites after the restart its model differs from the uninterrupted one's,
    # but the first 3 updates are the same, and both reach the target's neighbourhood
    assert history["rounds"][:3] == first_rounds
    assert np.abs(model["w"] - whole["w"]).max() < 0.2


def test_fedbuff_controller_arguments_are_checked_and_exported_by_flares_job_api():
    from nvflare.job_config.fed_job_config import FedJobConfig

    from flaretune.aggregation.fedbuff import FedBuffController

    with pytest.raises(ConfigError, match=r"^buffer_size must be an integer >= 1, got 0$"):
        FedBuffController(buffer_size=0)
    with pytest.raises(ConfigError, match=r"^Invalid staleness 'x'; valid: constant, sqrt, poly$"):
        FedBuffController(staleness="x")
    with pytest.raises(ConfigError, match=r"^Invalid aggregator 'adam'"):
        FedBuffController(aggregator="adam")
    args = FedJobConfig(job_name="j", min_clients=2)._get_args(
        FedBuffController(num_updates=6, buffer_size=3, aggregator="fedadam", staleness="poly"), "")
    assert args == {"num_updates": 6, "buffer_size": 3, "aggregator": "fedadam", "staleness": "poly"}


def test_fedbuff_core_and_sampling_import_neither_flare_nor_torch():
    import subprocess
    import sys

    code = ("import sys, flaretune.aggregation.buffer, flaretune.aggregation.asyncrounds, "
            "flaretune.aggregation.sampling; "
            "print([m for m in sys.modules if m.split('.')[0] in ('nvflare', 'torch')])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
