"""bench split's table and plot from a report (the runs themselves are flaretune compare's: tests/split)."""

from flaretune.bench.split import table_lines, write_plot

REPORT = {
    "split": {"test": 0.5, "per_round": [0.25, 0.5], "bytes_per_step": 2_473_504.2, "seconds_per_step": 1.1619,
              "peak_rss_mb": 771.1},
    "federated_lora": {"test": 0.4, "per_round": [0.1, 0.4], "bytes_per_step": 41_396.0, "seconds_per_step": 0.8918,
                       "peak_rss_mb": 895.3},
    "centralized": {"test": 0.3621}, "model": "minilm-ner", "sites": 3, "rounds": 2,
}


def test_table_puts_split_beside_federated_lora():
    assert table_lines(REPORT) == [
        f"{'':<34}{'split (FL-GLM)':>16}{'federated LoRA':>16}",
        f"{'test entity F1':<34}{'0.5000':>16}{'0.4000':>16}",
        f"{'bytes per step (site, both ways)':<34}{'2,473,504':>16}{'41,396':>16}",
        f"{'seconds per step (site)':<34}{'1.162':>16}{'0.892':>16}",
        f"{'peak RSS of a site, MiB':<34}{'771':>16}{'895':>16}",
        f"{'centralized LoRA F1 (same budget)':<34}{'0.3621':>16}",
    ]


def test_plot_is_written(tmp_path):
    out = write_plot(REPORT, tmp_path / "split.png")
    assert out.stat().st_size > 10_000
