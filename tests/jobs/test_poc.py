"""jobs/clinical_ner submitted to a real POC network on loopback through the FLARE API."""

import pytest

from flaretune.poc import PocNetwork, submit_and_wait

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


def test_clinical_ner_runs_in_poc_and_learns(tmp_path, small_hospitals, tiny_clinical_job):
    from flaretune.data.conll import read_conll

    # the sites read their data from their own environment, not from the job
    job = tiny_clinical_job(tmp_path / "job", small_hospitals, rounds=2, max_steps=40, learning_rate=0.02)
    from flaretune.jobcfg import JobFolder

    folder = JobFolder(job)
    folder.executor_args["data_path"] = ""
    folder.write(job)

    network = PocNetwork(tmp_path / "poc", n_clients=3, extra_env={"FLARETUNE_DATA_DIR": str(small_hospitals)})
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
    test = [s for site in ("site-1", "site-2", "site-3") for s in read_conll(small_hospitals / site / "test.conll")]
    untrained, trained = _scores(adapters[0], test)
    assert trained > 0.2 and trained > untrained + 0.1, (untrained, trained)
