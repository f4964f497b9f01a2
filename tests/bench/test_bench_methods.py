"""``flaretune bench methods``: the method syntax and the relative-to-full columns."""

import argparse

import pytest

from flaretune.bench.methods import parse_method, table_lines, with_relative


def test_a_method_is_name_layers_and_learning_rate():
    assert parse_method("layer_skip:top2@3e-4") == {"label": "layer_skip-top2", "method": "layer_skip",
                                                    "layers": "top2", "lr": 3e-4}
    assert parse_method("lora") == {"label": "lora", "method": "lora", "layers": None, "lr": None}
    with pytest.raises(argparse.ArgumentTypeError, match="must be a number"):
        parse_method("full@fast")


def _row(method, layers, upload, score):
    return {"label": method, "method": method, "layers": layers, "learning_rate": None, "trainable_params": 10,
            "peak_rss_mb": 500.0, "seconds_per_round": 2.0, "bytes_per_round_per_client": upload, "score": score}


def test_upload_and_score_are_relative_to_full_fine_tuning():
    rows = with_relative([_row("full", None, 1000, 0.50), _row("layer_skip", "top2", 250, 0.49)])
    assert rows[1]["upload_vs_full"] == 0.25
    assert rows[1]["score_vs_full"] == pytest.approx(-0.02)
    assert table_lines(rows)[-1] == "| layer_skip (layers top2) | 250 | 10 | 500 | 2.0 | 0.4900 | 25.0% | -2.0% |"
