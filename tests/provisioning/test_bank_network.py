"""The bank template's kits on loopback: one provisioning, one running network for the module. Each bank's own
policy holds whatever the job or the operator's server allows: updates leave only noised and masked, no custom
code runs at a bank, and only the lead submits."""

import json
import re
import shutil
import time

import pytest

from flaretune.poc import KitNetwork, submit_and_wait

from .conftest import REPO, cli_env, keep_jobs_in, loopback_project, nvflare, nvflare_json, provision

pytestmark = pytest.mark.integration

BANKS = ["bank-north", "bank-south", "bank-east"]
LEAD = "lead@operator.example"


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    from flaretune.data.finance import make_fin_dataset

    root = tmp_path_factory.mktemp("banks")
    prod = provision(loopback_project("bank_network.yml", root), root)
    server = prod / "localhost"
    keep_jobs_in(server, root / "server-storage")
    # the operator lets its lead bring custom code on its own server; no bank's policy does
    authz = json.loads((server / "local" / "authorization.json.default").read_text())
    authz["permissions"]["lead"]["byoc"] = "any"
    (server / "local" / "authorization.json").write_text(json.dumps(authz, indent=2))
    make_fin_dataset(root / "synth", n_sites=3, seed=3, n_train=8, n_test=4)
    data = root / "data"
    for i, name in enumerate(BANKS, start=1):
        shutil.copytree(root / "synth" / f"site-{i}", data / name)
    network = KitNetwork(root, prod_dir=prod, server="localhost", clients=BANKS, admin=LEAD,
                         extra_env={"FLARETUNE_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"})
    try:
        network.start_each()
        yield network
    finally:
        network.stop()
    assert not network._workspace_pids()


def _fin_job():
    from flaretune.jobcfg import JobFolder

    folder = JobFolder(REPO / "jobs" / "fin_instruct")
    folder.set_rounds(1)
    folder.persistor_args["model_name"] = "tiny-smollm2"
    folder.executor_args.update(max_steps=1, batch_size=4, max_length=64, num_threads=1)
    folder.workflow_args["final_validation"] = False
    return folder


def test_bank_kits_refuse_an_unmasked_update_and_run_a_secure_aggregation_job(banks, tmp_path):
    """A plain FedAvg job is refused at every bank (its update would leave unmasked); the same job under
    secure aggregation completes, every bank noising, then masking its update."""
    from flaretune.aggregation.secagg import enable_secure_aggregation

    network = banks
    folder = _fin_job()
    plain = folder.write(tmp_path / "plain")
    folder.meta["name"] = "fin_secagg"
    enable_secure_aggregation(folder, ["train"])
    secure = folder.write(tmp_path / "secure")
    refused_id, refused_status, _ = submit_and_wait(network, plain, timeout=300)
    job_id, status, result = submit_and_wait(network, secure, timeout=400)
    assert refused_status != "FINISHED:COMPLETED", refused_status
    assert status == "FINISHED:COMPLETED", status
    prod = network.prod_dir
    refusing = []
    for name in BANKS:
        refused = (prod / name / refused_id / "log.txt").read_text()
        # the first bank to finish training refuses and the server stops the job; the others are aborted first
        if f"SecureAggregationFilter: {name} sends model updates only under secure aggregation" in refused:
            refusing.append(name)
        else:
            assert "aborted" in refused, name
        log = (prod / name / job_id / "log.txt").read_text()
        assert "allowed to leave" in log and f"{name}: masked its update" in log, name
        # the bank checked every bank's signed keys against its rootCA.pem before masking
        assert f"{name}: verified the signed keys of {', '.join(sorted(BANKS))} for round" in log, name
        # distributed DP: the bank noised its update before masking it
        noised, masked = log.index("GaussianPrivacyFilter clipped the update"), log.index(f"{name}: masked its update")
        assert noised < masked, name
    assert refusing
    history = json.loads(next(result.glob("**/global_model/history.json")).read_text())
    assert history["rounds"][0]["secure_aggregation"]["u2"] == sorted(BANKS)


def test_neither_a_member_nor_a_banks_org_admin_can_submit_and_the_member_sees_the_jobs(banks, tmp_path):
    env = cli_env(tmp_path / "home")
    member = banks.prod_dir / "auditor@bank-north.example"
    before = nvflare_json("job", "list", "--startup-kit", member, env=env)
    for user in ("auditor@bank-north.example", "ops@bank-north.example"):
        proc = nvflare("job", "submit", "-j", "jobs/fin_instruct", "--startup-kit", banks.prod_dir / user, env=env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        # FLARE's refusal (its hint, 'Check startup kit credentials.', is about the kit; the right is missing)
        assert f"user '{user}' is not authorized for 'submit_job'" in proc.stderr and "AUTH_FAILED" in proc.stderr
    assert nvflare_json("job", "list", "--startup-kit", member, env=env) == before


def test_a_job_carrying_custom_code_is_refused_at_every_bank(banks, tmp_path):
    """The lead may submit custom code and the server deploys it; each bank's own authorization refuses it."""
    job = _fin_job()
    job.meta["name"] = "fin_byoc"
    byoc = job.write(tmp_path / "byoc")
    (byoc / "app" / "custom").mkdir()
    (byoc / "app" / "custom" / "helper.py").write_text("print('code from the lead')\n")
    env = cli_env(tmp_path / "home")
    submitted = nvflare("job", "submit", "-j", byoc, "--startup-kit", banks.admin_kit, env=env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = re.search(r"^job_id: (\S+)$", submitted.stdout, re.M).group(1)
    deadline = time.monotonic() + 120
    while True:
        meta = nvflare_json("job", "meta", job_id, "--startup-kit", banks.admin_kit, env=env)
        if meta["status"].startswith("FINISHED") or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert meta["status"] == "FINISHED:FAILED_TO_RUN", meta
    detail = meta["job_deploy_detail"]
    assert sorted(detail) == sorted(["server: OK", "num_ok_sites 0 < required_min_sites 3"] +
                                    [f"{name}: NVFLARE_ERROR: BYOC not permitted" for name in BANKS]), detail
    assert not any((banks.prod_dir / name / job_id).exists() for name in BANKS)
