"""``flaretune bench gpu --dry-run``: the prepared GPU check runs end to end on the CPU (tiny model, 1M dict)."""

import argparse
import json

import pytest

from flaretune.bench.gpu import add_arguments, run
from flaretune.models.qlora import bitsandbytes_missing


@pytest.mark.skipif(bitsandbytes_missing() is not None, reason=f"qlora: {bitsandbytes_missing()}")
def test_dry_run_writes_qlora_and_quantization_rows(tmp_path):
    import torch

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "gpu.json"
    assert run(parser.parse_args(["--dry-run", "--no-bench-quantize", "--json", str(out)])) == 0
    result = json.loads(out.read_text())
    lora, qlora = result["qlora"]
    assert (lora["method"], qlora["method"]) == ("lora", "qlora") and lora["steps"] == qlora["steps"] == 2
    assert lora["trainable_params"] == qlora["trainable_params"]
    storage = qlora["base_storage"]
    assert storage["linear4bit_layers"] == 14 and storage["packed_weight_bytes"] * 8 == storage["float32_weight_bytes"]
    rows = {(r["impl"], r["type"]): r for r in result["quantization"]}
    assert set(rows) == {(impl, t) for impl in ("flaretune", "nvflare") for t in ("float16", "blockwise8", "nf4", "fp4")}
    assert rows[("flaretune", "nf4")]["max_rel_err"] < 0.2 and rows[("nvflare", "float16")]["max_rel_err"] < 1e-3
    if not torch.cuda.is_available():  # NVFlare's 8/4-bit modes call .cuda()
        assert "CUDA" in rows[("nvflare", "nf4")]["error"]
