"""provisioning/*.yml build startup kits that run flaretune jobs under each site's policy (the kits running on
loopback: test_hospital_network.py, test_bank_network.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import TEMPLATES, provision

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
    prod = provision(TEMPLATES / template, tmp_path)
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
