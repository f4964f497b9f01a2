"""``python -m flaretune.bench.fin_recipe`` on the tiny causal model: rows per scored round, every
validation message answered once."""

import json

from flaretune.bench import fin_recipe


def test_federated_and_centralized_runs_score_the_validation_messages(tmp_path):
    out = tmp_path / "rows.jsonl"
    for extra in (["--federated", "--tau", "1"], []):
        assert fin_recipe.main(["--model", "tiny-smollm2", "--rounds", "2", "--steps", "1", "--eval-every", "2",
                                "--json", str(out)] + extra) == 0
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["setting"] for r in runs] == ["federated 2x1 lr 0.002", "centralized 2x1 lr 0.002"]
    for run, n_losses in zip(runs, (3, 1)):  # three banks' losses, or one pooled run
        assert [row["round"] for row in run["rounds"]] == [2]
        row = run["rounds"][0]
        assert len(row["losses"]) == n_losses and sum(row["answers"].values()) == 180
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["macro_f1"] <= 1.0
