"""Privacy in a real federation: jobs/clinical_ner with the client-level DP filter, and with DP-SGD sites."""

import json

import pytest

pytestmark = pytest.mark.integration

DP_FILTER = {"path": "flaretune.filters.dp.GaussianPrivacyFilter", "args": {"noise_multiplier": 0.5, "clip_norm": 0.25}}


def test_every_site_clips_and_noises_its_update_before_it_leaves(tmp_path, small_hospitals, tiny_clinical_job):
    from flaretune.jobcfg import JobFolder
    from flaretune.simulate import run_simulator

    folder = JobFolder(tiny_clinical_job(tmp_path / "base", small_hospitals, rounds=1, num_threads=1))
    # the filter records the received model on the way in (after the job's dequantizer) and clips + noises
    # the result on the way out (before its float16 quantizer); FLARE takes one filter chain per task
    for kind, position in (("task_data_filters", "after"), ("task_result_filters", "before")):
        (chain,) = folder.client[kind]
        chain["tasks"].remove("train")
        filters = chain["filters"] + [DP_FILTER] if position == "after" else [DP_FILTER] + chain["filters"]
        folder.client[kind].append({"tasks": ["train"], "filters": filters})
    job = folder.write(tmp_path / "job")
    run_dir = run_simulator(job, tmp_path / "ws", 3, log_file=tmp_path / "sim.log")

    history = json.loads((run_dir / "global_model" / "history.json").read_text())
    assert sorted(history["rounds"][0]["sites"]) == ["site-1", "site-2", "site-3"]
    log = (tmp_path / "sim.log").read_text()
    line = "GaussianPrivacyFilter clipped the update to L2 norm 0.25 and added Gaussian noise (std 0.125)"
    assert log.count(line) == 3
    # the training metrics did not leave the sites with the noised update
    assert all("local_f1" not in site["metrics"] for site in history["rounds"][0]["sites"].values())


def test_dp_sgd_sites_spend_a_budget_kept_in_their_workspace(tmp_path, small_hospitals, tiny_clinical_job):
    from flaretune.privacy import BUDGET_FILE, epsilon_for
    from flaretune.simulate import run_simulator

    z, q = 1.0, 0.25
    job = tiny_clinical_job(tmp_path / "job", small_hospitals, rounds=2, num_threads=1, max_steps=2,
                            train_step="dpsgd", train_step_args={"noise_multiplier": z, "max_grad_norm": 1.0,
                                                                 "sample_rate": q},
                            dp_epsilon_budget=8.0, dp_delta=1e-5)
    run_dir = run_simulator(job, tmp_path / "ws", 3, log_file=tmp_path / "sim.log")

    history = json.loads((run_dir / "global_model" / "history.json").read_text())
    expected = [epsilon_for(z, q, 2 * (r + 1), 1e-5, "rdp") for r in range(2)]  # 2 DP-SGD steps a round
    for r, record in enumerate(history["rounds"]):
        assert sorted(record["sites"]) == ["site-1", "site-2", "site-3"]
        for site in record["sites"].values():
            assert site["metrics"]["dp_epsilon"] == pytest.approx(expected[r], rel=1e-9)
    budgets = sorted((tmp_path / "ws").glob(f"site-*/{BUDGET_FILE}"))
    assert [p.parent.name for p in budgets] == ["site-1", "site-2", "site-3"]
