"""``flaretune bench stream`` on a tiny model in a real POC (about a minute here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.integration
def test_bench_stream_tiny(tmp_path):
    # its own process, as a user runs it: FLARE's admin client shares process-wide state with
    # whatever FLARE code earlier tests ran in this one
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "flaretune"), "bench", "stream", "--size-gb", "0.02",
         "--baseline-size-gb", "0.02", "--chunk-mb", "4", "--json", str(out), "--workdir", str(tmp_path),
         "--timeout", "300"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["impl"] for r in rows] == ["object_streamer", "flare_tensor_baseline"]
    for row in rows:
        assert set(row) == {"impl", "size_bytes", "chunk_mb", "peak_rss_mb", "seconds", "mb_s", "sha256_ok"}
        assert row["sha256_ok"] and row["seconds"] > 0
        assert {"server", "server-job", "site-1", "site-1-job", "site-2", "site-2-job"} <= set(row["peak_rss_mb"])
    assert out.with_suffix(".png").exists()
    assert not list(tmp_path.glob("ft_bench_stream_*"))  # the POC workspace is cleaned up
