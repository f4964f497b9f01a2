"""Secure aggregation on a real POC network on loopback: jobs/clinical_ner (tiny model) via the FLARE API.

POC kits give every site ``client.key``, ``client.crt`` and the project's ``rootCA.pem``, so the sites sign
their advertised keys and check each other's every round (flaretune.ops.secagg_identity)."""

import json

import pytest

from flaretune.poc import PocNetwork, submit_and_wait

pytestmark = pytest.mark.integration


def test_clinical_ner_under_secure_aggregation_in_poc(tmp_path, small_hospitals, tiny_clinical_job):
    from flaretune.aggregation.secagg import enable_secure_aggregation
    from flaretune.jobcfg import JobFolder

    folder = JobFolder(tiny_clinical_job(tmp_path / "base", small_hospitals, rounds=2, num_threads=1, max_steps=1))
    folder.executor_args["data_path"] = ""  # each site reads its own FLARETUNE_DATA_DIR
    enable_secure_aggregation(folder, ["train"])
    job = folder.write(tmp_path / "job")
    network = PocNetwork(tmp_path / "poc", n_clients=3, extra_env={"FLARETUNE_DATA_DIR": str(small_hospitals)})
    try:
        network.prepare()
        network.start()
        job_id, status, result = submit_and_wait(network, job, timeout=400)
    finally:
        network.stop()
    assert status == "FINISHED:COMPLETED", status
    assert not network._workspace_pids(), "POC processes survived stop()"
    history = json.loads(next(result.glob("**/global_model/history.json")).read_text())
    sites = ["site-1", "site-2", "site-3"]
    for record in history["rounds"]:
        info = record["secure_aggregation"]
        assert info["u2"] == sites and info["unmasked_by"] == sites and info["total_weight"] > 0
        assert all(s["num_examples"] is None and s["upload_param_bytes"] > 0 for s in record["sites"].values())
    assert sorted(history["final"]) == sites
    for site in sites:
        log = (network.prod_dir / site / job_id / "log.txt").read_text()
        assert log.count(f"{site}: secure-aggregation keys are signed with") == 1, site  # once per job
        # each of the 2 rounds: every advertisement chained to the site's rootCA.pem, CN = name, signature good
        assert log.count(f"{site}: verified the signed keys of site-1, site-2, site-3 for round") == 2, site
        assert "NOT signed" not in log and "refusing the secure-aggregation keys" not in log, site
