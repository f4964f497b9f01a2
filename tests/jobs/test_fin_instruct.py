"""jobs/fin_instruct end to end in the FLARE simulator on tiny-smollm2: two banks, two rounds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flaretune.jobcfg import JobFolder
from flaretune.provisioning.policy import allow_in_workspace
from flaretune.simulate import find_server_run_dir, venv_env

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
FIN_JOB = REPO / "jobs" / "fin_instruct"
SITES = ("site-1", "site-2")


def tiny_fin_job(out_dir, rounds=2, n_sites=2) -> Path:
    """The shipped job, unchanged but for the tiny twin, fewer rounds and sites, and small synthetic banks."""
    job = JobFolder(FIN_JOB)
    job.set_rounds(rounds)
    job.set_sites(n_sites)
    job.persistor_args["model_name"] = "tiny-smollm2"
    job.executor_args.update(
        max_steps=1, batch_size=4, max_length=64, synthetic_sites=n_sites, synthetic_train_size=8, synthetic_test_size=4
    )
    return job.write(out_dir)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("fin_sim")
    job = tiny_fin_job(root / "job")
    ws = root / "ws"
    allow_in_workspace(ws)  # what `WS/local/resources.json` must allow: the flaretune. prefix
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "nvflare"), "simulator", str(job), "-w", str(ws), "-n", "2", "-t", "2"],
        env=venv_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = find_server_run_dir(ws)
    assert run_dir is not None, f"no global model written; simulator output:\n{proc.stdout[-3000:]}"
    return run_dir


def test_rounds_carry_label_scores_from_every_bank(simulated):
    history = json.loads((simulated / "global_model" / "history.json").read_text())
    assert [r["round"] for r in history["rounds"]] == [0, 1]
    for record in history["rounds"]:
        assert sorted(record["sites"]) == list(SITES)
        for client in record["sites"].values():
            assert client["num_examples"] == 8
            metrics = client["metrics"]
            for name in ("global_accuracy", "local_accuracy", "global_macro_f1", "local_macro_f1"):
                assert 0.0 <= metrics[name] <= 1.0
            assert any(k.startswith("local_f1_") for k in metrics) and metrics["train_loss"] > 0
    assert sorted(history["final"]) == list(SITES)
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in history["final"].values())
    events = list((simulated / "tb_events").glob("site-*/events.out.tfevents.*"))
    assert {p.parent.name for p in events} == set(SITES)


def test_adapter_folder_loads_with_peft(simulated):
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file

    from flaretune.models import load_base_model
    from flaretune.models.lora import read_adapter_spec

    adapter = simulated / "global_model" / "adapter"
    spec = read_adapter_spec(adapter)
    assert spec.model_name == "tiny-smollm2" and spec.target_modules == ["q_proj", "v_proj"]
    model = PeftModel.from_pretrained(load_base_model(spec.model_name, seed=spec.seed), str(adapter))
    final = load_file(str(simulated / "global_model" / "round-001.safetensors"))
    assert final and all("lora_" in name for name in final)  # only adapter tensors were aggregated
    loaded = get_peft_model_state_dict(model)
    assert set(loaded) == set(final)
    for name, tensor in final.items():
        torch.testing.assert_close(loaded[name], tensor)


def test_the_adapter_folder_is_told_how_the_banks_prompt_and_score():
    """The persistor's ``task`` (written into the final adapter folder for predict/chat) matches the executor."""
    job = JobFolder(FIN_JOB)
    task, ex = job.persistor_args["task"], job.executor_args
    assert task == {"system_prompt": ex["system_prompt"], "label_words": ["positive", "negative", "neutral"],
                    "max_length": ex["max_length"]}
