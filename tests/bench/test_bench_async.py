"""flaretune bench async at a toy size: both workflows run through the real server loops and the report's
fields are there; the straggler gets fewer tasks under FedBuff than the fast sites (no timing asserted)."""

import json

from flaretune.bench import asyncfl
from flaretune.cli import main


def test_bench_async_reports_both_workflows_and_the_ratio(tmp_path, capsys):
    out = tmp_path / "async.json"
    assert main(["bench", "async", "--fast-seconds", "0.01", "--slow-seconds", "0.05", "--target", "0.8",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for name in ("fedavg_sync", "fedbuff"):
        row = report[name]
        assert row["seconds_to_target"] is not None and row["best_accuracy"] >= 0.8
        assert row["curve"][row["updates_to_target"] - 1][1] >= 0.8 > max(s for _, s in row["curve"][:row["updates_to_target"] - 1] or [(0, 0)])
    sync, buff = report["fedavg_sync"]["tasks"], report["fedbuff"]["tasks"]
    assert sync["site-1"] == sync["site-2"] == sync["site-3"] == report["fedavg_sync"]["updates_to_target"]
    assert buff["site-3"] < buff["site-1"]
    assert report["ratio"] == report["fedavg_sync"]["seconds_to_target"] / report["fedbuff"]["seconds_to_target"]
    printed = capsys.readouterr().out
    assert "fedavg_sync" in printed and "fedbuff" in printed and "ratio (synchronous / FedBuff" in printed


def test_the_stragglers_data_is_needed_when_skew_is_1():
    sites, test, init = asyncfl.make_sites(3, 0, skew=1.0)
    assert [sorted(set(y.tolist())) for _, y in sites] == [[0, 1], [1, 2], [2, 3]]
