"""provisioning/*.yml build startup kits that run flaretune jobs under each site's policy."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flaretune.poc import KitNetwork, free_port, submit_and_wait

TEMPLATES = Path(__file__).resolve().parents[2] / "provisioning"
CLINICAL_JOB = Path(__file__).resolve().parents[2] / "jobs" / "clinical_ner"
FIN_JOB = Path(__file__).resolve().parents[2] / "jobs" / "fin_instruct"


def _provision(project: Path, tmp_path: Path) -> Path:
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    (tmp_path / "home").mkdir(exist_ok=True)
    proc = subprocess.run([str(Path(sys.executable).parent / "nvflare"), "provision", "-p", str(project),
                           "-w", str(tmp_path / "ws")], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    name = yaml.safe_load(project.read_text())["name"]
    return tmp_path / "ws" / name / "prod_00"


DP = {"path": "flaretune.filters.dp.GaussianPrivacyFilter", "args": {"noise_multiplier": 0.5, "clip_norm": 0.25}}
SECAGG = {"path": "flaretune.filters.secagg.SecureAggregationFilter", "args": {"require_signed_keys": True}}
BANKS = ["bank-north", "bank-south", "bank-east"]


@pytest.mark.parametrize("template, clients, allowed, dp, secagg", [
    ("hospital_network.yml", ["hospital-a", "hospital-b", "hospital-c"],
     ["*lora_*", "*.classifier.*", "*modules_to_save*"], DP, None),
    ("bank_network.yml", BANKS, ["*lora_*"], DP, SECAGG),
])
def test_templates_provision_kits_with_flaretune_site_policy(tmp_path, template, clients, allowed, dp, secagg):
    project = yaml.safe_load((TEMPLATES / template).read_text())
    prod = _provision(TEMPLATES / template, tmp_path)
    server = next(p["name"] for p in project["participants"] if p["type"] == "server")
    for site in [server] + clients:
        local = prod / site / "local"
        allow = json.loads((local / "resources.json.default").read_text())["class_allow_list"]
        assert "flaretune." in allow and "nvflare." in " ".join(allow)  # FLARE's own entries kept
        authz = json.loads((local / "authorization.json.default").read_text())["permissions"]
        assert authz["lead"]["byoc"] == "none" and authz["org_admin"]["byoc"] == "none"
        assert authz["lead"]["submit_job"] == "any" and authz["project_admin"] == "any"
    for site in clients:
        privacy = json.loads((prod / site / "local" / "privacy.json").read_text())
        scope = privacy["scopes"][0]
        assert privacy["default_scope"] == scope["name"] == "adapters_only"
        # hospitals and banks clip and noise every update themselves, before the guard; banks then mask it
        expected = [f for f in (dp, "guard", secagg) if f]
        results = scope["task_result_filters"]
        assert [f if f in (dp, secagg) else "guard" for f in results] == expected
        guard = results[expected.index("guard")]
        assert guard["path"] == "flaretune.filters.guard.AdapterOnlyGuard" and guard["args"]["allowed"] == allowed
        assert scope.get("task_data_filters", []) == [f for f in (dp, secagg) if f]
    assert not (prod / server / "local" / "privacy.json").exists()
    admins = [p["name"] for p in project["participants"] if p["type"] == "admin"]
    assert all((prod / a / "startup" / "fed_admin.json").is_file() for a in admins)


def test_bad_builder_arguments_fail_the_provisioning_with_a_clear_message(tmp_path):
    project = yaml.safe_load((TEMPLATES / "hospital_network.yml").read_text())
    builder = next(b for b in project["builders"] if b["path"].startswith("flaretune."))
    builder["args"]["adapter_guard"]["max_mb"] = 0
    path = tmp_path / "project.yml"
    path.write_text(yaml.safe_dump(project))
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.run([str(Path(sys.executable).parent / "nvflare"), "provision", "-p", str(path), "-w",
                           str(tmp_path / "ws")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0 or not (tmp_path / "ws" / project["name"] / "prod_00").exists()
    assert "max_mb for AdapterOnlyGuard must be a number > 0" in proc.stdout + proc.stderr


@pytest.mark.integration
def test_hospital_kits_run_clinical_ner_and_the_guard_checks_every_result(tmp_path):
    """The hospital template, renamed to run on loopback: three kits, the lead researcher submits."""
    from flaretune.data.clinical import make_clinical_dataset
    from flaretune.jobcfg import JobFolder

    project = yaml.safe_load((TEMPLATES / "hospital_network.yml").read_text())
    server = next(p for p in project["participants"] if p["type"] == "server")
    server.update(name="localhost", fed_learn_port=free_port())  # the only edit a real network would not make
    path = tmp_path / "project.yml"
    path.write_text(yaml.safe_dump(project))
    prod = _provision(path, tmp_path)

    hospitals = ["hospital-a", "hospital-b", "hospital-c"]
    make_clinical_dataset(tmp_path / "synth", n_sites=3, seed=3, n_train=64, n_test=16)
    data = tmp_path / "data"
    for i, name in enumerate(hospitals, start=1):  # each hospital's own files, under its own name
        shutil.copytree(tmp_path / "synth" / f"site-{i}", data / name)
    folder = JobFolder(CLINICAL_JOB)
    folder.set_rounds(1)
    folder.executor_args.update({"max_steps": 4, "num_threads": 1})
    job = folder.write(tmp_path / "job")

    network = KitNetwork(tmp_path, prod_dir=prod, server="localhost", clients=hospitals,
                         admin="lead@consortium.example", extra_env={"FLARETUNE_DATA_DIR": str(data)})
    # a job that asks for another privacy scope than the hospitals' own (to opt out of their policy)
    meta = json.loads((job / "meta.json").read_text())
    opt_out = tmp_path / "opt_out"
    shutil.copytree(job, opt_out)
    (opt_out / "meta.json").write_text(json.dumps({**meta, "name": "opt_out", "scope": "open"}))
    try:
        network.start_each()
        job_id, status, _ = submit_and_wait(network, job, timeout=600)
        refused_id, refused_status, _ = submit_and_wait(network, opt_out, timeout=300)
    finally:
        network.stop()
    assert status == "FINISHED:COMPLETED", status
    assert refused_status != "FINISHED:COMPLETED", refused_status
    assert not network._workspace_pids()
    for name in hospitals:
        log = (prod / name / job_id / "log.txt").read_text()
        # every result that left the hospital went through its privacy policy first
        assert "AdapterOnlyGuard" in log and "allowed to leave" in log, name
        assert "UNSAFE_JOB" not in log
        # the hospital's own DP policy ran although the job asked for none
        assert "GaussianPrivacyFilter clipped the update to L2 norm 0.25" in log, name
    # the opt-out job was never deployed: every hospital refused its scope
    server_log = (prod / "localhost" / "log.txt").read_text()
    for name in hospitals:
        assert f"{name}: NVFLARE_ERROR: privacy scope 'open' is not allowed" in server_log, name


@pytest.mark.integration
def test_bank_kits_refuse_an_unmasked_update_and_run_a_secure_aggregation_job(tmp_path):
    """The bank template on loopback: a plain FedAvg job is refused at every bank (its update would leave
    unmasked); the same job under secure aggregation completes, every bank noising, then masking its update."""
    from flaretune.aggregation.secagg import enable_secure_aggregation
    from flaretune.data.finance import make_fin_dataset
    from flaretune.jobcfg import JobFolder

    project = yaml.safe_load((TEMPLATES / "bank_network.yml").read_text())
    server = next(p for p in project["participants"] if p["type"] == "server")
    server.update(name="localhost", fed_learn_port=free_port())
    path = tmp_path / "project.yml"
    path.write_text(yaml.safe_dump(project))
    prod = _provision(path, tmp_path)

    make_fin_dataset(tmp_path / "synth", n_sites=3, seed=3, n_train=8, n_test=4)
    data = tmp_path / "data"
    for i, name in enumerate(BANKS, start=1):
        shutil.copytree(tmp_path / "synth" / f"site-{i}", data / name)
    folder = JobFolder(FIN_JOB)
    folder.set_rounds(1)
    folder.persistor_args["model_name"] = "tiny-smollm2"
    folder.executor_args.update(max_steps=1, batch_size=4, max_length=64, num_threads=1)
    folder.workflow_args["final_validation"] = False
    plain = folder.write(tmp_path / "plain")
    folder.meta["name"] = "fin_secagg"
    enable_secure_aggregation(folder, ["train"])
    secure = folder.write(tmp_path / "secure")

    network = KitNetwork(tmp_path, prod_dir=prod, server="localhost", clients=BANKS,
                         admin="lead@operator.example", extra_env={"FLARETUNE_DATA_DIR": str(data)})
    try:
        network.start_each()
        refused_id, refused_status, _ = submit_and_wait(network, plain, timeout=300)
        job_id, status, result = submit_and_wait(network, secure, timeout=400)
    finally:
        network.stop()
    assert refused_status != "FINISHED:COMPLETED", refused_status
    assert status == "FINISHED:COMPLETED", status
    assert not network._workspace_pids()
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
