"""Every bad client result is rejected with its reason; the honest sites' weighted mean is what aggregates."""

import re

import numpy as np
import pytest

from flaretune.aggregation.strategy import make_strategy
from flaretune.aggregation.validation import (
    ValidationPolicy,
    aggregate_round,
    check_num_examples,
    norm_outliers,
    update_norm,
)
from flaretune.errors import ConfigError


def _p(w, b, dtype=np.float32):
    return {"w": np.array(w, dtype=dtype), "b": np.array(b, dtype=dtype)}


GLOBAL = _p([0, 0], [0])
# weights 1, 3, 4 of 8: mean w = [0.125*1 + 0.375*3 + 0.5*1, 0.125*2 - 0.375*2 + 0] = [1.75, -0.5]
#                            b = [0.125*1 - 0.375*1 + 0] = [-0.25]
HONEST = {
    "site-1": (_p([1, 2], [1]), 1),
    "site-2": (_p([3, -2], [-1]), 3),
    "site-3": (_p([1, 0], [0]), 4),
}
HONEST_MEAN = {"w": [1.75, -0.5], "b": [-0.25]}
# honest update norms: sqrt(6), sqrt(14), 1; with one outlier the median of four is (sqrt(6)+sqrt(14))/2 ~ 3.1

BAD_RESULTS = [
    pytest.param(_p([np.nan, 0], [0]), 2, r"tensor 'w' has 1 non-finite value\(s\) \(NaN or Inf\)", id="nan"),
    pytest.param(_p([0, 0], [np.inf]), 2, r"tensor 'b' has 1 non-finite value", id="+inf"),
    pytest.param(_p([-np.inf, np.inf], [0]), 2, r"tensor 'w' has 2 non-finite values?", id="-inf"),
    pytest.param({**_p([1, 1], [1]), "extra": np.zeros(1, np.float32)}, 2, r"^unexpected tensors: 'extra'$",
                 id="extra-key"),
    pytest.param({"w": np.zeros(2, np.float32)}, 2, r"^missing tensors: 'b'$", id="missing-key"),
    pytest.param({"w": np.zeros(3, np.float32), "b": np.zeros(1, np.float32)}, 2,
                 r"tensor 'w' has shape \(3,\), the global model's is \(2,\)", id="bad-shape"),
    pytest.param({"w": np.zeros((2, 1), np.float32), "b": np.zeros(1, np.float32)}, 2,
                 r"tensor 'w' has shape \(2, 1\)", id="bad-rank"),
    pytest.param(_p([1, 1], [1], dtype=np.float64), 2,
                 r"tensor 'b' has dtype float64, the global model's is float32", id="bad-dtype"),
    pytest.param({"w": [1.0, 1.0], "b": np.zeros(1, np.float32)}, 2, r"tensor 'w' is a list, not a numpy array",
                 id="not-an-array"),
    pytest.param(_p([100, 0], [0]), 2, r"update norm 100 is more than 10 x the round's median norm 3\.09",
                 id="norm-outlier"),
    pytest.param(_p([1, 1], [1]), 10**9, r"example count 1000000000 is above the cap max_num_examples=1000000",
                 id="inflated-count"),
    pytest.param(_p([1, 1], [1]), 0, r"example count must be positive, got 0", id="zero-count"),
    pytest.param(_p([1, 1], [1]), -5, r"example count must be positive, got -5", id="negative-count"),
    pytest.param(_p([1, 1], [1]), "12", r"example count must be a number, got str '12'", id="string-count"),
    pytest.param(_p([1, 1], [1]), True, r"example count must be a number, got bool True", id="bool-count"),
    pytest.param(_p([1, 1], [1]), None, r"example count missing", id="missing-count"),
    pytest.param(_p([1, 1], [1]), float("nan"), r"example count must be finite, got nan", id="nan-count"),
    pytest.param(_p([1, 1], [1]), float("inf"), r"example count must be finite, got inf", id="inf-count"),
    pytest.param(_p([1, 1], [1]), [3], r"example count must be a number, got list", id="list-count"),
    pytest.param("not params", 2, r"parameters must be a dict of arrays, got str", id="not-a-dict"),
]


@pytest.mark.parametrize("aggregator", ["fedavg", "fedprox"])
@pytest.mark.parametrize("params, num_examples, reason", BAD_RESULTS)
def test_bad_result_is_rejected_and_the_honest_mean_aggregates(aggregator, params, num_examples, reason):
    strategy = make_strategy(aggregator, **({"mu": 0.01} if aggregator == "fedprox" else {}))
    results = {**HONEST, "site-bad": (params, num_examples)}
    new, accepted, rejected = aggregate_round(strategy, GLOBAL, results)
    assert accepted == ["site-1", "site-2", "site-3"]
    assert list(rejected) == ["site-bad"]
    assert "\n" not in rejected["site-bad"]
    assert re.search(reason, rejected["site-bad"]), rejected["site-bad"]
    assert {k: v.tolist() for k, v in new.items()} == HONEST_MEAN
    assert new["w"].dtype == np.float32


def test_all_honest_sites_are_accepted_with_their_weights():
    new, accepted, rejected = aggregate_round(make_strategy("fedavg"), GLOBAL, HONEST)
    assert (accepted, rejected) == (["site-1", "site-2", "site-3"], {})
    assert {k: v.tolist() for k, v in new.items()} == HONEST_MEAN


def test_numpy_counts_are_numbers():
    results = {site: (params, np.int64(n)) for site, (params, n) in HONEST.items()}
    new, accepted, _ = aggregate_round(make_strategy("fedavg"), GLOBAL, results)
    assert len(accepted) == 3 and new["w"].tolist() == HONEST_MEAN["w"]


def test_several_bad_sites_each_get_their_own_reason():
    results = {**HONEST, "nan": (_p([np.nan, 0], [0]), 1), "greedy": (_p([1, 1], [1]), 2_000_000),
               "huge": (_p([0, 500], [0]), 1)}
    new, accepted, rejected = aggregate_round(make_strategy("fedavg"), GLOBAL, results)
    assert accepted == ["site-1", "site-2", "site-3"]
    assert sorted(rejected) == ["greedy", "huge", "nan"]
    assert rejected["nan"].startswith("tensor 'w' has 1 non-finite")
    assert rejected["greedy"].startswith("example count 2000000 is above the cap")
    assert rejected["huge"].startswith("update norm 500 is more than 10 x")
    assert new["w"].tolist() == HONEST_MEAN["w"]


def test_result_does_not_depend_on_arrival_order():
    reordered = {site: HONEST[site] for site in ["site-3", "site-1", "site-2"]}
    new, accepted, _ = aggregate_round(make_strategy("fedadam"), GLOBAL, reordered)
    reference, _, _ = aggregate_round(make_strategy("fedadam"), GLOBAL, HONEST)
    assert accepted == ["site-1", "site-2", "site-3"]
    assert all(np.array_equal(new[k], reference[k]) for k in new)


def test_nothing_accepted_leaves_the_model_and_the_strategy_unchanged():
    strategy = make_strategy("fedadam")
    results = {"a": (_p([np.nan, 0], [0]), 1), "b": (_p([1, 1], [1]), 0)}
    new, accepted, rejected = aggregate_round(strategy, GLOBAL, results)
    assert (accepted, sorted(rejected)) == ([], ["a", "b"])
    assert all(np.array_equal(new[k], GLOBAL[k]) for k in GLOBAL)
    assert strategy.state_dict()["step"] == 0 and strategy.state_dict()["moments"] == {}


# ---- the norm rule ----
def test_update_norm_spans_all_tensors():
    assert update_norm(GLOBAL, _p([3, 0], [4])) == 5.0
    assert update_norm(_p([1, 1], [1]), _p([4, 1], [-3])) == 5.0


def test_norm_check_needs_three_results():
    # norms 1 and 10: median 5.5, and 10 > 1.5 x 5.5 — but two results give no majority to compare with
    two = {"small": (_p([1, 0], [0]), 1), "large": (_p([10, 0], [0]), 1)}
    assert norm_outliers(GLOBAL, two, 1.5) == {}
    three = {**two, "other": (_p([0, 1], [0]), 1)}  # norms 1, 1, 10: median 1
    assert list(norm_outliers(GLOBAL, three, 1.5)) == ["large"]


def test_norm_threshold_is_factor_times_median():
    # norms 1, 2, 20.5: median 2, factor 10 -> 20 < 20.5 rejected; 20 itself is not above the threshold
    results = {"a": (_p([1, 0], [0]), 1), "b": (_p([2, 0], [0]), 1), "c": (_p([20.5, 0], [0]), 1)}
    assert list(norm_outliers(GLOBAL, results, 10.0)) == ["c"]
    results["c"] = (_p([20, 0], [0]), 1)
    assert norm_outliers(GLOBAL, results, 10.0) == {}


def test_norm_check_skipped_when_disabled_or_without_scale():
    results = {"a": (_p([1, 0], [0]), 1), "b": (_p([1, 0], [0]), 1), "c": (_p([1e6, 0], [0]), 1)}
    policy = ValidationPolicy(norm_outlier_factor=0)
    _, accepted, rejected = aggregate_round(make_strategy("fedavg", policy=policy), GLOBAL, results)
    assert (accepted, rejected) == (["a", "b", "c"], {})
    unchanged = {"a": (GLOBAL, 1), "b": (GLOBAL, 1), "c": (_p([5, 0], [0]), 1)}  # median norm 0
    assert norm_outliers(GLOBAL, unchanged, 10.0) == {}


# ---- policy ----
def test_the_cap_is_configurable_and_inclusive():
    strategy = make_strategy("fedavg", policy=ValidationPolicy(max_num_examples=10))
    assert strategy.validate(GLOBAL, _p([1, 1], [1]), 10) is None
    assert strategy.validate(GLOBAL, _p([1, 1], [1]), 11) == "example count 11 is above the cap max_num_examples=10"
    assert make_strategy("fedavg").policy == ValidationPolicy(max_num_examples=1_000_000, norm_outlier_factor=10.0)


@pytest.mark.parametrize("value, accepted", [(1, True), (2.5, True), (np.float32(3), True), (0.0, False),
                                             (np.bool_(True), False), (b"3", False)])
def test_example_count_types(value, accepted):
    assert (check_num_examples(value, 100) is None) == accepted


@pytest.mark.parametrize("kwargs, message", [
    ({"max_num_examples": 0}, "max_num_examples must be a number > 0, got 0"),
    ({"max_num_examples": "many"}, "max_num_examples must be a number > 0, got 'many'"),
    ({"norm_outlier_factor": -1.0}, "norm_outlier_factor must be 0 \\(off\\) or a finite number > 1, got -1.0"),
    ({"norm_outlier_factor": 1.0}, "norm_outlier_factor must be 0 \\(off\\) or a finite number > 1, got 1.0"),
    ({"norm_outlier_factor": float("inf")}, "norm_outlier_factor must be 0"),
])
def test_bad_policy_fails_with_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        ValidationPolicy(**kwargs)
    assert "\n" not in str(err.value)
