"""The hospital template's kits on loopback, deployed as README 'Deploy to real sites' says: one provisioning,
one running network for the module. The lead researcher submits ``jobs/clinical_ner`` itself with
``nvflare job submit``; a kit from another provisioning tries to join all along."""

import json
import re
import shutil
import time

import pytest
import yaml

from flaretune.poc import KitNetwork, submit_and_wait

from .conftest import REPO, cli_env, foreign_kit, keep_jobs_in, loopback_project, nvflare, nvflare_json, provision

pytestmark = pytest.mark.integration

HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]
LEAD = "lead@consortium.example"
INTRUDER = "hospital-d"


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory):
    from flaretune.data.clinical import make_clinical_dataset

    root = tmp_path_factory.mktemp("hospitals")
    project = loopback_project("hospital_network.yml", root)
    prod = provision(project, root)
    keep_jobs_in(prod / "localhost", root / "server-storage")
    make_clinical_dataset(root / "synth", n_sites=3, seed=3, n_train=32, n_test=8)
    data = root / "data"
    for i, name in enumerate(HOSPITALS, start=1):  # each hospital's own files, under its own name
        shutil.copytree(root / "synth" / f"site-{i}", data / name)
    # the environment each hospital sets before startup/start.sh (README: the environment each site sets)
    site_env = {"FLARETUNE_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}
    network = KitNetwork(root, prod_dir=prod, server="localhost", clients=HOSPITALS, admin=LEAD, extra_env=site_env)
    intruder = KitNetwork(root, prod_dir=foreign_kit(project, root, INTRUDER), server="localhost",
                          clients=[INTRUDER])
    try:
        network.start_each()
        intruder.restart_site(INTRUDER)  # keeps retrying while the other tests run
        yield network, intruder, project
    finally:
        intruder.stop()
        network.stop()
    assert not network._workspace_pids() and not intruder._workspace_pids()


def test_lead_submits_clinical_ner_with_nvflare_job_submit_and_every_hospital_guards_its_results(hospitals,
                                                                                                 tmp_path):
    """The admin-console path of the README, in a HOME of its own: register the lead's kit, submit the job
    folder as checked in (MiniLM, 10 rounds), monitor it, download its result."""
    network, _, _ = hospitals
    env = cli_env(tmp_path / "lead-home")
    for args in (["config", "add", "lead", network.admin_kit], ["config", "use", "lead"]):
        proc = nvflare(*args, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    submitted = nvflare("job", "submit", "-j", "jobs/clinical_ner", env=env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = re.search(r"^job_id: (\S+)$", submitted.stdout, re.M).group(1)
    monitor = nvflare("job", "monitor", job_id, "--timeout", "900", env=env, timeout=960)
    assert monitor.returncode == 0 and "(FINISHED:COMPLETED)" in monitor.stdout, monitor.stdout + monitor.stderr
    download = nvflare("job", "download", job_id, "-o", tmp_path / "results", env=env)
    assert download.returncode == 0, download.stdout + download.stderr
    global_model = tmp_path / "results" / job_id / "workspace" / "global_model"
    history = json.loads((global_model / "history.json").read_text())
    assert len(history["rounds"]) == 10 and (global_model / "adapter" / "adapter_model.safetensors").is_file()
    for name in HOSPITALS:
        log = (network.prod_dir / name / job_id / "log.txt").read_text()
        # every result that left the hospital went through its privacy policy first
        assert "AdapterOnlyGuard" in log and "allowed to leave" in log, name
        assert "UNSAFE_JOB" not in log
        # the hospital's own DP policy ran although the job asks for none
        assert "GaussianPrivacyFilter clipped the update to L2 norm 0.25" in log, name


def test_a_job_asking_for_another_privacy_scope_is_refused_by_every_hospital(hospitals, tmp_path):
    """A job whose meta.json names another scope than the hospitals' own (to opt out of their policy),
    submitted through the FLARE API."""
    network, _, _ = hospitals
    opt_out = tmp_path / "opt_out"
    shutil.copytree(REPO / "jobs" / "clinical_ner", opt_out)
    meta = json.loads((opt_out / "meta.json").read_text())
    (opt_out / "meta.json").write_text(json.dumps({**meta, "name": "opt_out", "scope": "open"}))
    job_id, status, _ = submit_and_wait(network, opt_out, timeout=300)
    assert status == "FINISHED:FAILED_TO_RUN", status
    # never deployed: every hospital refused its scope
    server_log = (network.prod_dir / "localhost" / "log.txt").read_text()
    for name in HOSPITALS:
        assert f"{name}: NVFLARE_ERROR: privacy scope 'open' is not allowed" in server_log, name
        assert not (network.prod_dir / name / job_id).exists(), name


def test_a_kit_from_another_provisioning_cannot_join_and_its_log_says_why(hospitals):
    """Same project name, server name and port, but its own root CA: the site does not trust the server's
    certificate, says so in its log each time it retries, and the server never lists it."""
    network, intruder, project = hospitals
    port = next(p for p in yaml.safe_load(project.read_text())["participants"] if p["type"] == "server")[
        "fed_learn_port"]
    log = intruder.prod_dir / INTRUDER / "log.txt"
    expected = (f"Cannot connect to host localhost:{port} ssl:True [SSLCertVerificationError: (1, '[SSL: "
                f"CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate in certificate chain")
    deadline = time.monotonic() + 180
    while expected not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(3)
    assert expected in log.read_text(), log.read_text()[-3000:]
    status = nvflare_json("system", "status", "--startup-kit", network.admin_kit, env=network.env)
    assert sorted(c["client_name"] for c in status["clients"]) == HOSPITALS, status
    assert INTRUDER not in (network.prod_dir / "localhost" / "log.txt").read_text()
