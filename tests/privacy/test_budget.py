"""PrivacyBudget: survives a restart, refuses the round that would overspend, writes atomically."""

import json
import os

import pytest

from flaretune.errors import ConfigError
from flaretune.privacy import BudgetExceededError, PrivacyBudget, epsilon_for

DELTA = 1e-5


def test_a_restarted_site_keeps_what_it_spent(tmp_path):
    path = tmp_path / "site-1" / "privacy_budget.json"
    budget = PrivacyBudget(path, epsilon=8.0, delta=DELTA)
    assert budget.spent() == 0.0 and not path.exists()
    budget.spend(1.1, 0.01, 100)
    total = budget.spend(1.1, 0.01, 100)
    assert total == pytest.approx(epsilon_for(1.1, 0.01, 200, DELTA), rel=1e-12)
    # the site restarts (or a new job runs under the same budget): a fresh object reads the file
    again = PrivacyBudget(path, epsilon=8.0, delta=DELTA)
    assert again.accountant.history == [(1.1, 0.01, 200)] and again.spent() == total
    assert json.loads(path.read_text()) == {"version": 1, "epsilon": 8.0, "delta": DELTA, "accountant": {
        "version": 1, "mechanism": "rdp", "history": [[1.1, 0.01, 200]]}}
    assert sorted(p.name for p in path.parent.iterdir()) == ["privacy_budget.json", "privacy_budget.json.lock"]


def test_the_round_that_would_overspend_is_refused_with_one_message(tmp_path):
    path = tmp_path / "budget.json"
    budget = PrivacyBudget(path, epsilon=4.0, delta=DELTA)
    budget.spend(1.0, 0.05, 50)
    spent = budget.spent()
    assert budget.would_exceed(1.0, 0.05, 1) is None  # one more step still fits
    alone, total = epsilon_for(1.0, 0.05, 50, DELTA), epsilon_for(1.0, 0.05, 100, DELTA)
    assert spent < 4.0 < total
    assert budget.would_exceed(1.0, 0.05, 50) == (
        f"privacy budget epsilon=4 at delta=1e-05 ({path}) is exhausted: {spent:.4f} spent, the next round "
        f"(50 steps, noise_multiplier=1, sample_rate=0.05) needs epsilon={alone:.4f} on its own and would bring "
        f"the total to {total:.4f}")
    before = path.read_text()
    with pytest.raises(BudgetExceededError, match="is exhausted"):
        budget.spend(1.0, 0.05, 50)
    assert path.read_text() == before and budget.spent() == spent  # nothing recorded


def test_two_jobs_sharing_a_budget_both_count(tmp_path):
    path = tmp_path / "budget.json"
    job_a, job_b = PrivacyBudget(path, 8.0, DELTA), PrivacyBudget(path, 8.0, DELTA)
    job_a.spend(1.1, 0.01, 100)
    job_b.spend(1.1, 0.01, 100)  # job_b's copy was stale: spend rereads the file first
    assert PrivacyBudget(path, 8.0, DELTA).accountant.history == [(1.1, 0.01, 200)]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "budget.json"
    budget = PrivacyBudget(path, 8.0, DELTA)
    budget.spend(1.1, 0.01, 10)
    before = path.read_text()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        budget.spend(1.1, 0.01, 10)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["budget.json", "budget.json.lock"]  # no temp file left


def test_the_accountant_may_change_but_delta_may_not(tmp_path):
    path = tmp_path / "budget.json"
    PrivacyBudget(path, 8.0, DELTA).spend(1.1, 0.01, 100)
    prv = PrivacyBudget(path, 8.0, DELTA, accountant="prv")
    assert prv.accountant.history == [(1.1, 0.01, 100)] and prv.spent() == pytest.approx(
        epsilon_for(1.1, 0.01, 100, DELTA, "prv"))
    with pytest.raises(ConfigError, match=r"budget.json: this budget was spent at delta=1e-05, not delta=1e-06"):
        PrivacyBudget(path, 8.0, 1e-6)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable privacy budget file"):
        PrivacyBudget(path, 8.0, DELTA)


@pytest.mark.parametrize("kwargs, message", [
    ({"epsilon": 0}, "privacy budget epsilon must be a number > 0, got 0"),
    ({"delta": 1.0}, r"delta must be in \(0, 1\), got 1.0"),
    ({"accountant": "moments"}, "Invalid accountant 'moments'; valid: rdp, prv"),
])
def test_bad_budget_settings(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PrivacyBudget(tmp_path / "b.json", **{"epsilon": 8.0, "delta": DELTA, **kwargs})


