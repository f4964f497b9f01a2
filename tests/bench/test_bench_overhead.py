"""``flaretune bench overhead``: a round's span split exactly into the sites' work and where the rest went."""

import json

import pytest

from flaretune.bench.overhead import PARTS, job_breakdown, overhead_of, round_breakdown, table_lines, union_length
from flaretune.train.flow import TASK_RECEIVED_AT, WORK_ENDED_AT, WORK_STARTED_AT


def _site(received, started, ended):
    return {"num_examples": 10, "metrics": {TASK_RECEIVED_AT: received, WORK_STARTED_AT: started,
                                            WORK_ENDED_AT: ended, "local_f1": 0.5}}


def _round(r, started_at, results_at, seconds, **sites):
    return {"round": r, "started_at": started_at, "results_at": results_at, "seconds": seconds,
            "sites": {name: _site(*times) for name, times in sites.items()}}


def test_union_length_counts_overlaps_once():
    assert union_length([]) == 0.0
    assert union_length([(0, 2), (1, 3), (5, 6), (5.5, 5.7), (7, 7)]) == 4.0
    assert union_length([(4, 6), (0, 1)]) == 3.0


def test_parallel_sites_split_exactly():
    # round starts at 100; site-1 gets the task at 102, works 103-110; site-2 at 102.5, works 104-112;
    # results all in at 113; the next round starts at 115
    record = _round(0, 100.0, 113.0, 14.0, **{"site-1": (102.0, 103.0, 110.0), "site-2": (102.5, 104.0, 112.0)})
    row = round_breakdown(record, 115.0)
    assert row["span"] == 15.0
    assert row["work"] == 9.0  # 103-112
    assert row["dispatch"] == 2.0  # 100-102
    assert row["site_setup"] == 1.0  # 102-103: one site holds the task, none works yet
    assert row["between_sites"] == 0.0
    assert row["result_return"] == 1.0  # 112-113
    assert row["server"] == 2.0  # 113-115
    assert sum(row[p] for p in PARTS) == pytest.approx(row["span"], abs=1e-9)
    assert row["overhead"] == 6.0 and row["overhead_fraction"] == pytest.approx(6.0 / 15.0)


def test_sites_run_one_after_another_leave_a_gap_between_them():
    record = _round(0, 0.0, 21.0, 22.0, **{"site-1": (1.0, 1.0, 10.0), "site-2": (12.0, 12.0, 20.0)})
    row = round_breakdown(record, 22.0)
    assert (row["work"], row["dispatch"], row["between_sites"], row["result_return"], row["server"]) == \
        (17.0, 1.0, 2.0, 1.0, 1.0)
    assert row["site_setup"] == 0.0


def test_job_spans_run_to_the_next_round_and_the_last_round_to_its_own_end():
    history = {"rounds": [
        _round(0, 0.0, 9.0, 9.5, a=(1.0, 2.0, 8.0)),
        _round(1, 10.0, 18.0, 8.5, a=(11.0, 11.0, 17.0)),
    ]}
    result = job_breakdown(history)
    first, second = result["rounds"]
    assert first["span"] == 10.0 and first["server"] == 1.0  # 9 -> the next round at 10 (checkpoint included)
    assert second["span"] == 8.5 and second["server"] == 0.5  # the last: started_at + seconds
    total = result["total"]
    assert total["span"] == 18.5 and total["work"] == 12.0 and total["overhead"] == 6.5
    assert total["overhead_fraction"] == pytest.approx(6.5 / 18.5)
    assert total["overhead_fraction_after_round_1"] == pytest.approx(2.5 / 8.5)
    lines = table_lines("sim", result)
    assert "overhead 35.1% of the job's round time: target <= 10% not met" in lines[-1]
    assert "site setup 1.0s" not in lines[-1] and "dispatch 2.0s (10.8%)" in lines[-1]


def test_rounds_without_timing_are_named_not_guessed(tmp_path):
    untimed = {"round": 0, "seconds": 5.0, "sites": {"site-1": {"metrics": {"local_f1": 0.4}}}}
    result = job_breakdown({"rounds": [untimed]})
    assert result["rounds"][0]["missing"] == "the round has no started_at/results_at"
    assert result["total"] == {} and result["timed_rounds"] == 0
    half = _round(0, 0.0, 5.0, 6.0, a=(1.0, 1.0, 4.0))
    half["sites"]["b"] = {"metrics": {}}  # e.g. a DP filter dropped this site's training metrics
    assert round_breakdown(half, 6.0)["missing"] == "no timing metrics from b"
    path = tmp_path / "history.json"
    path.write_text(json.dumps({"rounds": [half]}))
    assert overhead_of(path) is None
    assert overhead_of(tmp_path / "absent.json") is None
