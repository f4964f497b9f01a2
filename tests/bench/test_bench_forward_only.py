"""``flaretune bench forward-only``'s summary: same rounds, same wall time, upload and memory ratios."""

from flaretune.bench.forward_only import format_table, score_within, summarize, write_plot


def _run(name, seconds, scores, upload, rss):
    cumulative, rounds = 0.0, []
    for r, (s, score) in enumerate(zip(seconds, scores)):
        cumulative += s
        rounds.append({"round": r + 1, "score": score, "seconds": s, "cumulative_seconds": cumulative})
    return {"method": name, "score_key": "f1", "initial_score": 0.02, "trainable_params": 1000,
            "upload_bytes_per_round": upload, "peak_rss_mb": rss, "train_peak_rss_mb": rss - 10,
            "seconds_per_round": sum(seconds) / len(seconds), "rounds": rounds, "replay_exact": True}


def test_same_time_takes_the_last_round_that_ended_within_backprops_time(tmp_path):
    backprop = _run("lora", [2.0, 2.0], [0.1, 0.3], 4000, 800.0)
    forward = _run("forward_only", [3.0, 3.0, 3.0], [0.05, 0.08, 0.09], 64, 640.0)
    summary = summarize(backprop, forward, rounds=2)
    fo = summary["methods"]["forward_only"]
    assert summary["time_budget_s"] == 4.0
    assert (fo["score_after_rounds"], fo["score_after_same_time"], fo["rounds_run"]) == (0.08, 0.05, 3)
    assert summary["methods"]["lora"]["score_after_same_time"] == 0.3
    assert summary["upload_ratio"] == 64 / 4000 and summary["peak_rss_ratio"] == 800.0 / 640.0
    assert score_within(forward, 2.9) == 0.02  # not even one round: the initial score
    assert "forward_only" in format_table(summary) and "replay exact: True" in format_table(summary)
    backprop["model"] = forward["model"] = "tiny"
    write_plot([backprop, forward], summary, tmp_path / "fo.png")
    assert (tmp_path / "fo.png").stat().st_size > 1000
