"""model_push before training: the sites fine-tune LoRA on the base model the server streamed to them."""

import pytest

from flaretune.jobcfg import JobFolder
from flaretune.streaming.chunks import file_sha256

pytestmark = pytest.mark.integration


def test_clinical_ner_trains_on_the_pushed_base_model(tmp_path, small_hospitals, tiny_clinical_job):
    from flaretune.data.types import CLINICAL_NOTES_LABELS
    from flaretune.models.base import load_base_model, load_tokenizer
    from flaretune.simulate import run_simulator

    base = tmp_path / "base"  # e.g. a merged model from an earlier job; here a seeded tiny MiniLM
    load_base_model("tiny-minilm-ner", labels=CLINICAL_NOTES_LABELS, seed=7).save_pretrained(str(base))
    load_tokenizer("tiny-minilm-ner").save_pretrained(str(base))
    folder = JobFolder(tiny_clinical_job(tmp_path / "job0", small_hospitals, rounds=1, num_threads=1))
    folder.add_model_push(str(base), chunk_mb=0.25)
    job = folder.write(tmp_path / "job")
    assert JobFolder(job).num_rounds == 1  # the training workflow is still found behind model_push

    ws = tmp_path / "ws"
    run_dir = run_simulator(job, ws, 3, threads=3, log_file=tmp_path / "sim.log", timeout=600)

    assert (run_dir / "global_model" / "adapter" / "adapter_config.json").is_file()
    for site in ("site-1", "site-2", "site-3"):
        pushed = ws / site / "models" / "base"
        assert file_sha256(pushed / "model.safetensors") == file_sha256(base / "model.safetensors"), site
        log = (ws / site / "log.txt").read_text()
        assert f"base model tiny-minilm-ner from {pushed}" in log, site
