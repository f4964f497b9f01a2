"""The one round loop, driven by a stand-in for a FLARE controller: validation, min_clients, checkpoint, resume."""

import json

import numpy as np
import pytest

from flaretune.aggregation.checkpoint import Checkpoint
from flaretune.aggregation.rounds import MemoryStore, RoundDriver, RoundSettings, SiteResult, run_rounds, state_digest
from flaretune.aggregation.strategy import make_strategy


class Sites(RoundDriver):
    """Each site answers ``x + offset`` (its local model) with its example count; ``bad`` answers with NaN."""

    def __init__(self, offsets, counts, bad=(), stop_after=None):
        self.offsets, self.counts, self.bad, self.stop_after = offsets, counts, set(bad), stop_after
        self.log, self.published, self.failed, self.trained = [], {}, None, []

    def available_clients(self):
        return sorted(self.offsets)

    def train(self, round_number, sites, global_model, meta):
        self.trained.append(round_number)
        out = {}
        for site in sites:
            params = {"w": global_model["w"] + np.float32(self.offsets[site])}
            if site in self.bad:
                params["w"] = np.full_like(params["w"], np.nan)
            out[site] = SiteResult(params, self.counts[site], {"f1": 0.5}, 8)
        return out

    def publish(self, global_model, round_number, final):
        self.published[round_number] = {k: v.copy() for k, v in global_model.items()}
        return f"round-{round_number}"

    def aborted(self):
        return self.stop_after is not None and len(self.trained) > self.stop_after

    def info(self, message):
        self.log.append(message)

    warn = info

    def fail(self, message):
        self.failed = message


X0 = {"w": np.array([0.0, 1.0], dtype=np.float32)}
OFFSETS = {"site-1": 1.0, "site-2": -0.5, "site-3": 0.25}
COUNTS = {"site-1": 1, "site-2": 2, "site-3": 1}


def test_the_honest_sites_weighted_mean_is_the_new_model_and_the_rejected_site_is_named(tmp_path):
    driver = Sites(OFFSETS, dict(COUNTS, **{"site-3": "many"}))
    model, history = run_rounds(driver, MemoryStore(), make_strategy("fedavg"), RoundSettings(1, min_clients=2),
                                dict(X0), tmp_path / "history.json")
    # (1 * 1.0 + 2 * -0.5) / 3 = 0: site-3's string example count must not weigh in
    assert model["w"].tolist() == [0.0, 1.0]
    record = history["rounds"][0]
    assert sorted(record["sites"]) == ["site-1", "site-2"]
    assert record["rejected"] == {"site-3": "example count must be a number, got str 'many'"}
    assert json.loads((tmp_path / "history.json").read_text()) == history
    assert any("rejected the result of site-3" in line for line in driver.log)


def test_too_few_accepted_results_stop_the_job_with_one_message_naming_them(tmp_path):
    driver = Sites(OFFSETS, COUNTS, bad={"site-1", "site-2"})
    model, history = run_rounds(driver, MemoryStore(), make_strategy("fedavg"), RoundSettings(3, min_clients=2),
                                dict(X0), tmp_path / "history.json")
    assert model is None and driver.trained == [0] and driver.published == {}
    assert driver.failed.startswith("round 1/3: 1 result(s) accepted, 2 needed (min_clients); site-1: tensor 'w'")
    assert "site-2: tensor 'w' has 2 non-finite value(s)" in driver.failed
    assert history["error"] == driver.failed


def test_a_resumed_job_ends_exactly_where_an_uninterrupted_one_does(tmp_path):
    def strategy():
        return make_strategy("fedadam", server_lr=0.1)

    whole, _ = run_rounds(Sites(OFFSETS, COUNTS), MemoryStore(), strategy(), RoundSettings(4, seed=3),
                          dict(X0), tmp_path / "a.json")
    # the first run stops after 2 of 4 rounds (as a killed server would), leaving its checkpoint
    checkpoint = Checkpoint(tmp_path / "checkpoint")
    first = Sites(OFFSETS, COUNTS, stop_after=2)
    run_rounds(first, MemoryStore(), strategy(), RoundSettings(4, seed=3), dict(X0), tmp_path / "b.json", checkpoint)
    assert first.trained == [0, 1, 2] and sorted(first.published) == [0, 1]  # round 2 was interrupted
    saved = checkpoint.load(MemoryStore())
    assert saved["round"] == 1 and saved["global_model"]["w"].tolist() == first.published[1]["w"].tolist()

    second = Sites(OFFSETS, COUNTS)
    resumed, history = run_rounds(second, MemoryStore(), strategy(), RoundSettings(4, seed=3), dict(X0),
                                  tmp_path / "c.json", Checkpoint(tmp_path / "checkpoint"), saved)
    assert second.trained == [2, 3]
    assert resumed["w"].tolist() == whole["w"].tolist()  # same moments, same model: bit for bit
    assert [r["round"] for r in history["rounds"]] == [0, 1, 2, 3]
    (entry,) = history["resumed"]
    assert entry["after_round"] == 1 and entry["strategy_step"] == 2
    assert entry["strategy_sha256"] == state_digest(saved["strategy"])
    # the checkpoint folder holds the last round only, each file whole
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "global-003.safetensors", "state.json", "strategy-003.safetensors"]


def test_resuming_with_another_aggregator_is_refused_in_one_line(tmp_path):
    from flaretune.errors import ConfigError

    checkpoint = Checkpoint(tmp_path / "ck")
    run_rounds(Sites(OFFSETS, COUNTS), MemoryStore(), make_strategy("fedadam"), RoundSettings(1), dict(X0),
               tmp_path / "h.json", checkpoint)
    with pytest.raises(ConfigError, match="for aggregator 'fedadam', this job runs 'fedyogi'"):
        run_rounds(Sites(OFFSETS, COUNTS), MemoryStore(), make_strategy("fedyogi"), RoundSettings(2), dict(X0),
                   tmp_path / "h.json", checkpoint, checkpoint.load(MemoryStore()))


def test_a_damaged_checkpoint_is_named(tmp_path):
    from flaretune.errors import ConfigError

    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ConfigError, match="state.json: not a readable flaretune checkpoint"):
        Checkpoint(tmp_path).load(MemoryStore())


def test_resume_from_names_a_relative_folder_under_the_workspace_and_refuses_an_empty_one(tmp_path):
    from flaretune.aggregation.checkpoint import resume_point, snapshot_folder
    from flaretune.errors import ConfigError

    assert resume_point(tmp_path, "", MemoryStore()) is None
    run_rounds(Sites(OFFSETS, COUNTS), MemoryStore(), make_strategy("fedavg"), RoundSettings(1), dict(X0),
               tmp_path / "h.json", Checkpoint(tmp_path / "job-1" / "checkpoint"))
    assert resume_point(tmp_path, "job-1/checkpoint", MemoryStore())["round"] == 0
    with pytest.raises(ConfigError, match=r"resume_from '.*job-2/checkpoint' holds no checkpoint \(no state.json\)"):
        resume_point(tmp_path, "job-2/checkpoint", MemoryStore())
    assert snapshot_folder({"checkpoint": str(tmp_path / "job-1" / "checkpoint")}) == str(tmp_path / "job-1" / "checkpoint")
    assert snapshot_folder({"checkpoint": str(tmp_path / "job-2")}) == "" and snapshot_folder(None) == ""
