"""``python jobs/clinical_ner/job.py --env sim`` end to end: FLARE's SimEnv, no separate site-policy step."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_job_py_runs_clinical_ner_in_simenv_and_prepares_the_allow_list(tmp_path):
    home, ws = tmp_path / "home", tmp_path / "ws"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    env.pop("NVFLARE_SIMULATOR_WORKSPACE_ROOT", None)
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "clinical_ner" / "job.py"), "--env", "sim", "--sites", "2",
         "--model", "tiny-minilm-ner", "--rounds", "1", "--max-steps", "2", "--workspace", str(ws)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    workspace = ws / "clinical_ner"  # SimEnv runs in <workspace_root>/<job name>
    resources = workspace / "local" / "resources.json"
    lines = proc.stdout.splitlines()
    assert lines[0] == (f"flaretune: allowed 'flaretune.' components in {resources} "
                        f"(class_allow_list, as `flaretune site-policy` does)")
    allow = json.loads(resources.read_text())["class_allow_list"]
    assert "flaretune." in allow and "nvflare.app_opt.tracking.tb.tb_writer.TBWriter" in allow  # FLARE's kept
    assert "ComponentNotAuthorized" not in output and "is deprecated" not in output

    run_dir = workspace / "server" / "simulate_job"
    assert lines[-1] == f"flaretune: clinical_ner ran in the simulator; the server's run folder is {run_dir}"
    history = json.loads((run_dir / "global_model" / "history.json").read_text())
    assert [r["round"] for r in history["rounds"]] == [0]
    assert sorted(history["rounds"][0]["sites"]) == ["site-1", "site-2"] == sorted(history["final"])
    assert "site-1 round 0: 2 steps" in output and "site-2 round 0: 2 steps" in output
    assert (run_dir / "global_model" / "adapter" / "adapter_config.json").is_file()
