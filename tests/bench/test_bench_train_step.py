"""``flaretune bench train-step`` on the tiny causal model: both ways run on the same batches and agree."""

import json

from flaretune.cli import main


def test_train_step_bench_times_both_ways_and_they_agree(tmp_path, capsys):
    out = tmp_path / "step.json"
    assert main(["bench", "train-step", "--model", "tiny-smollm2", "--batches", "2", "--json", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["batches"] == 2 and row["median_prefix_tokens"] >= 8
    assert row["full_s_per_step"] > 0 and row["shared_prefix_s_per_step"] > 0
    assert row["max_loss_diff"] < 1e-6 and row["max_grad_rel_diff"] < 1e-5
    assert "speedup" in capsys.readouterr().out
