"""``flaretune bench quantize`` on a small state dict: JSON rows, table and plot."""

import argparse
import json
import math

import pytest

from flaretune.bench.quantize import add_arguments, model_shapes, parse_params, run

FIELDS = {"impl", "type", "wire_bytes", "fp32_bytes", "max_rel_err", "quantize_mb_s", "dequantize_mb_s"}


@pytest.mark.parametrize("text,expected", [("100M", 100_000_000), ("1.5M", 1_500_000), ("2e6", 2_000_000),
                                           ("500k", 500_000), ("1B", 1_000_000_000)])
def test_parse_params(text, expected):
    assert parse_params(text) == expected


@pytest.mark.parametrize("text", ["abc", "10", "-5M"])
def test_parse_params_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_params(text)


@pytest.mark.parametrize("arch", ["llama", "bert"])
@pytest.mark.parametrize("n", [1_000_000, 100_000_000])
def test_state_dict_shapes_are_transformer_like_and_near_the_size(arch, n):
    shapes = model_shapes(n, arch)
    total = sum(math.prod(s) for s in shapes.values())
    assert abs(total - n) / n < 0.25  # whole layers: coarse at 1M
    assert sum(len(s) == 2 for s in shapes.values()) >= 7 and any(len(s) == 1 for s in shapes.values())


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")  # inside NVFlare's adaquant
def test_bench_writes_rows_table_and_plot(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "bq.json"
    args = parser.parse_args(["--params", "1M", "--json", str(out), "--types", "blockwise8", "--repeat", "1"])
    assert run(args) == 0
    rows = json.loads(out.read_text())
    assert all(FIELDS <= set(r) for r in rows)
    by = {(r["impl"], r["type"]): r for r in rows}
    assert {("copy", "fp32"), ("flaretune", "blockwise8"), ("nvflare", "blockwise8"), ("nvflare", "adaquant"),
            ("nvflare-cpu-patched", "blockwise8")} <= set(by)
    ours = by["flaretune", "blockwise8"]
    assert ours["fp32_bytes"] == by["copy", "fp32"]["fp32_bytes"] and ours["wire_bytes"] < 0.26 * ours["fp32_bytes"]
    assert 0 < ours["max_rel_err"] < 0.0042 and ours["quantize_mb_s"] > 0 and ours["dequantize_mb_s"] > 0
    nv = by["nvflare", "blockwise8"]
    if nv.get("error"):  # no CUDA: NVFlare's blockwise8 calls .cuda()
        assert nv["wire_bytes"] is None and nv["quantize_mb_s"] is None
    assert (tmp_path / "bq.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "flaretune" in printed and "targets" in printed and "% fp32" in printed


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")  # inside NVFlare's adaquant
def test_entropy_row_beside_adaquant_with_its_targets(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "bq.json"
    assert run(parser.parse_args(["--params", "1M", "--json", str(out), "--types", "entropy", "--repeat", "1"])) == 0
    by = {(r["impl"], r["type"]): r for r in json.loads(out.read_text())}
    ours, theirs = by["flaretune", "entropy"], by["nvflare", "adaquant"]
    assert ours["max_rel_err"] <= 0.03 and ours["wire_pct"] < theirs["wire_pct"]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("entropy ")]
    assert len(lines) == 2
    assert f"wire {ours['wire_pct']:.3f}% of fp32 at max rel err {ours['max_rel_err']:.4f}" in lines[0]
    speed = ours["quantize_mb_s"] / theirs["quantize_mb_s"]
    verdicts = (f"bytes {'met' if ours['wire_pct'] <= 10 else 'MISSED'}, error met, "
                f"speed {speed:.1f}x {'met' if speed >= 10 else 'MISSED'}")  # 1M params: norms weigh more than at 20M
    assert lines[0].endswith(verdicts) and "vs NVFlare adaquant" in lines[0]
    assert lines[1].startswith("  entropy    beats adaquant on every axis (bytes, error, quantize, dequantize): ")
