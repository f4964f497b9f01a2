"""jobs/clinical_ner submitted to a real POC network on loopback through the FLARE API."""

import pytest

from pathlib import Path

from flaretune.poc import PocNetwork, submit_and_wait

CLINICAL_JOB = Path(__file__).resolve().parents[2] / "jobs" / "clinical_ner"

pytestmark = pytest.mark.integration


def _scores(adapter_dir, test_sentences):
    from flaretune.models.lora import adapter_state, load_adapter_model
    from flaretune.train.ner_trainer import NerTrainer

    model, spec = load_adapter_model(adapter_dir)
    trainer = NerTrainer(spec, max_length=64)
    encoded = trainer.encode(test_sentences)
    untrained = trainer.evaluate(encoded)["f1"]  # the job's initial adapter: same spec, same seed
    trainer.set_params(adapter_state(model))
    return untrained, trainer.evaluate(encoded)["f1"]


def test_clinical_ner_runs_in_poc_and_learns(tmp_path):
    """The shipped job with its real MiniLM base, shortened to 2 rounds of 12 steps per site."""
    from flaretune.data.clinical import make_clinical_dataset
    from flaretune.data.conll import read_conll
    from flaretune.jobcfg import JobFolder

    data = tmp_path / "data"
    # the easy template sentences, so that 24 steps are enough to show the POC path learns (the realistic
    # notes need ~100 steps to leave the all-O state: tests/train/test_ner.py)
    make_clinical_dataset(data, n_sites=3, seed=2, n_train=96, n_test=20, style="templates")
    folder = JobFolder(CLINICAL_JOB)
    folder.set_rounds(2)
    folder.executor_args.update({"max_steps": 12, "num_threads": 1, "learning_rate": 5e-3, "warmup_ratio": 0.0,
                                 "lr_schedule": "constant"})
    job = folder.write(tmp_path / "job")

    # the sites read their data from their own environment, not from the job
    network = PocNetwork(tmp_path / "poc", n_clients=3, extra_env={"FLARETUNE_DATA_DIR": str(data)})
    try:
        network.prepare()
        network.start()
        job_id, status, result = submit_and_wait(network, job, timeout=600)
    finally:
        network.stop()
    assert status == "FINISHED:COMPLETED", status
    assert not network._workspace_pids(), "POC processes survived stop()"

    adapters = list(result.glob("**/global_model/adapter"))
    assert len(adapters) == 1, f"no adapter in the downloaded result {result}"
    test = [s for site in ("site-1", "site-2", "site-3") for s in read_conll(data / site / "test.conll")]
    untrained, trained = _scores(adapters[0], test)
    assert trained > 0.2 and trained > untrained + 0.1, (untrained, trained)
