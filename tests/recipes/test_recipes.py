"""flaretune.recipes: every job folder is its recipe's export; options, privacy and environments as arguments."""

import json
import shutil
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from flaretune.errors import ConfigError
from flaretune.recipes import RECIPES, recipe_class
from flaretune.recipes.cli import build_parser, main, make_env, make_recipe

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "jobs"
FILES = ("meta.json", "app/config/config_fed_server.json", "app/config/config_fed_client.json")
JOB_FOLDERS = sorted(p.name for p in JOBS.iterdir() if (p / "meta.json").is_file())


def _tasks_as_sets(config: dict) -> dict:
    """FLARE's exporter writes each filter chain's tasks from a set: their order is the only thing it generates."""
    for key in ("task_data_filters", "task_result_filters"):
        for entry in config.get(key, []):
            entry["tasks"] = sorted(entry["tasks"])
    return config


def _read(folder: Path, rel: str) -> dict:
    return json.loads((folder / rel).read_text())


def test_every_job_folder_has_a_recipe_and_a_job_py():
    assert JOB_FOLDERS == sorted(RECIPES) == ["clinical_ner", "fin_instruct", "model_push", "split_ner", "streamed_fedavg"]
    for job in JOB_FOLDERS:
        assert (JOBS / job / "job.py").is_file()


@pytest.mark.parametrize("job", JOB_FOLDERS)
def test_the_checked_in_job_folder_is_what_flare_exports_from_the_recipe(job, tmp_path):
    recipe = recipe_class(job)()
    recipe.export(str(tmp_path))  # FLARE's own exporter (Recipe.export -> FedJob.export_job)
    for rel in FILES:
        assert _tasks_as_sets(_read(tmp_path / job, rel)) == _tasks_as_sets(_read(JOBS / job, rel)), (
            f"jobs/{job}/{rel} drifted from its recipe: regenerate with python jobs/{job}/job.py --export jobs/{job}")


@pytest.mark.parametrize("job", ["clinical_ner", "model_push"])
def test_export_writes_the_checked_in_files_byte_for_byte_and_keeps_the_rest(job, tmp_path):
    folder = tmp_path / job
    shutil.copytree(JOBS / job, folder)
    (folder / "app" / "config" / "stale.json").write_text("{}")
    assert main(job, ["--export", str(folder)]) == 0
    for rel in FILES:
        assert (folder / rel).read_text() == (JOBS / job / rel).read_text()
    assert (folder / "README.md").read_text() == (JOBS / job / "README.md").read_text()
    assert not (folder / "app" / "config" / "stale.json").exists()  # app/ is the export's, whole


def test_export_refuses_a_folder_that_is_not_a_job_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main("clinical_ner", ["--export", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"jobs/clinical_ner/job.py: {tmp_path}: exists and is not a job folder (no meta.json); "
                   f"give a new or empty folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _args(job: str, *argv: str) -> Namespace:
    return build_parser(job).parse_args(list(argv))


def test_each_option_replaces_one_field_and_the_rest_keep_the_job_folders_values():
    recipe = make_recipe("clinical_ner", _args("clinical_ner", "--sites", "2", "--rounds", "1", "--model",
                                               "tiny-minilm-ner", "--max-steps", "2", "--quantize", "none"))
    server, client = recipe.server_config, recipe.client_config
    shipped_server, shipped_client = (_read(JOBS / "clinical_ner", rel) for rel in FILES[1:])
    assert recipe.min_clients == 2
    assert server["workflows"][0]["args"] == {**shipped_server["workflows"][0]["args"], "num_rounds": 1}
    persistor = server["components"][0]["args"]
    assert persistor == {**shipped_server["components"][0]["args"], "model_name": "tiny-minilm-ner"}
    executor = client["executors"][0]["executor"]["args"]
    assert executor == {**shipped_client["executors"][0]["executor"]["args"], "max_steps": 2}
    for config in (server, client):
        assert config["task_data_filters"] == config["task_result_filters"] == []


def test_fin_instruct_tells_the_adapter_how_the_banks_prompt():
    from flaretune.recipes import InstructTraining

    recipe = recipe_class("fin_instruct")(training=InstructTraining(system_prompt="You are a bank.", max_length=64))
    task = recipe.server_config["components"][0]["args"]["task"]
    assert task == {"system_prompt": "You are a bank.", "label_words": ["positive", "negative", "neutral"],
                    "max_length": 64}


def _chain(config: dict, key: str, task: str) -> list:
    (entry,) = [e for e in config[key] if task in e["tasks"]]  # FLARE takes one entry per task
    return [f["path"].rsplit(".", 1)[1] for f in entry["filters"]]


def test_privacy_and_transfer_options_are_wired_as_flaretune_compare_wires_them(tmp_path):
    from flaretune.recipes import DPSGD, ClientDP, ClinicalNerRecipe, SecureAggregation

    recipe = ClinicalNerRecipe(client_dp=ClientDP(noise_multiplier=0.5, clip_norm=0.25),
                               dp_sgd=DPSGD(epsilon_budget=8.0, noise_multiplier=1.0, sample_rate=0.25),
                               secure_aggregation=SecureAggregation(threshold=2))
    server, client = recipe.server_config, recipe.client_config
    assert server["workflows"][0]["path"] == "flaretune.aggregation.secagg.SecAggController"
    assert server["workflows"][0]["args"]["threshold"] == 2 and server["server"]["task_request_interval"] == 0.5
    assert _chain(client, "task_data_filters", "train") == [
        "DequantizeFilter", "GaussianPrivacyFilter", "SecureAggregationFilter"]
    assert _chain(client, "task_result_filters", "train") == ["GaussianPrivacyFilter", "SecureAggregationFilter"]
    assert _chain(client, "task_result_filters", "validate") == ["QuantizeFilter"]
    executor = client["executors"][0]["executor"]["args"]
    assert (executor["train_step"], executor["dp_epsilon_budget"], executor["train_step_args"]) == (
        "dpsgd", 8.0, {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "sample_rate": 0.25})
    recipe.export(str(tmp_path))  # the whole job exports as configured, top-level server settings too
    exported_server = _read(tmp_path / "clinical_ner", FILES[1])
    assert _tasks_as_sets(exported_server) == _tasks_as_sets(json.loads(json.dumps(server)))

    sparse = ClinicalNerRecipe(quantization="nf4", keep_fraction=0.1)
    assert _chain(sparse.client_config, "task_result_filters", "train") == ["TopKSparsifyFilter", "QuantizeFilter"]
    assert _chain(sparse.server_config, "task_result_filters", "train") == ["DequantizeFilter", "DensifyFilter"]


@pytest.mark.parametrize("make, message", [
    (lambda r: r.ClinicalNerRecipe(rounds=r.Rounds(aggregator="fedfoo")), "Invalid aggregator 'fedfoo'"),
    (lambda r: r.ClinicalNerRecipe(training=r.NerTraining(extra={"learning_rat": 1e-3})),
     "config_fed_client.json executors[0]: PeftTrainExecutor has no argument 'learning_rat'"),
    (lambda r: r.ClinicalNerRecipe(rounds=r.Rounds(extra={"num_round": 2}), secure_aggregation=r.SecureAggregation()),
     "config_fed_server.json workflows[0]: SecAggController has no argument 'num_round'"),
    (lambda r: r.NerTraining(extra={"seed": 1}), "NerTraining.extra repeats ['seed']: set those fields instead"),
    (lambda r: r.ModelPushRecipe(receiver=r.PushReceiver(task_name="push")), "must be the same task"),
])
def test_a_bad_argument_fails_when_the_recipe_is_built(make, message):
    import flaretune.recipes as recipes

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make(recipes)


def _kit(folder: Path, username: str = "lead@hospital.org") -> Path:
    (folder / "startup").mkdir(parents=True)
    admin = {"format_version": 1, "admin": {"username": username}}
    (folder / "startup" / "fed_admin.json").write_text(json.dumps(admin))
    return folder


def test_envs_are_flares_sim_poc_and_prod_from_the_arguments(tmp_path):
    from nvflare.recipe import PocEnv, ProdEnv, SimEnv

    recipe = make_recipe("model_push", _args("model_push"))
    sim = make_env(_args("model_push", "--sites", "3", "--threads", "1", "--workspace", str(tmp_path)), recipe)
    assert isinstance(sim, SimEnv) and (sim.num_clients, sim.num_threads, sim.workspace_root) == (3, 1, str(tmp_path))
    poc = make_env(_args("model_push", "--env", "poc"), recipe)
    assert isinstance(poc, PocEnv) and poc.num_clients == recipe.min_clients == 2
    kit = _kit(tmp_path / "lead@hospital.org")
    for env in ("prod", "poc"):  # poc with a kit: a POC network that runs already (flaretune poc start)
        prod = make_env(_args("model_push", "--env", env, "--startup-kit", str(kit)), recipe)
        assert isinstance(prod, ProdEnv)
        assert (prod.startup_kit_location, prod.username) == (str(kit.resolve()), "lead@hospital.org")


@pytest.mark.parametrize("argv, message", [
    (["--env", "prod"], "--env prod needs --startup-kit KIT: the admin's startup kit of the network"),
    (["--env", "sim", "--startup-kit", "kit"], "--startup-kit is for --env prod or poc (the simulator needs none)"),
    (["--env", "prod", "--startup-kit", "{tmp}/site-1"], "--startup-kit {tmp}/site-1: not an admin startup kit "
     "(no startup/fed_admin.json); give the folder provisioning wrote for an admin, e.g. .../prod_00/admin@nvidia.com"),
])
def test_a_wrong_environment_argument_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "site-1" / "startup").mkdir(parents=True)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main("model_push", argv) == 2
    assert capsys.readouterr().err == f"jobs/model_push/job.py: {message.replace('{tmp}', str(tmp_path))}\n"


def test_job_py_with_a_wrong_startup_kit_says_so_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(JOBS / "clinical_ner" / "job.py"), "--env", "prod", "--startup-kit",
                           str(tmp_path / "missing")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"jobs/clinical_ner/job.py: --startup-kit {tmp_path / 'missing'}: not an admin startup kit (no "
        f"startup/fed_admin.json); give the folder provisioning wrote for an admin, e.g. .../prod_00/admin@nvidia.com"]


def test_a_submission_flare_refuses_is_one_line_and_exit_1(tmp_path, capsys):
    kit = _kit(tmp_path / "admin@nvidia.com", "admin@nvidia.com")  # no certificates, no local/: FLARE refuses it
    assert main("model_push", ["--env", "prod", "--startup-kit", str(kit)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("model_push: Failed to submit job via Flare API: ")


def test_poc_kits_are_provisioned_to_allow_flaretune(tmp_path, monkeypatch, capsys):
    from nvflare.recipe import PocEnv
    from nvflare.tool.poc.poc_commands import prepare_poc_provision

    monkeypatch.setenv("NVFLARE_POC_WORKSPACE", str(tmp_path / "poc"))
    env = PocEnv(num_clients=2)
    recipe = recipe_class("model_push")()  # holds the project file until its run ends
    recipe.process_env(env)
    assert capsys.readouterr().out.startswith("flaretune: the POC kits allow 'flaretune.' components (")
    prepare_poc_provision(clients=[], number_of_clients=2, workspace=env.poc_workspace, docker_image=None,
                          project_conf_path=env.project_conf_path, examples_dir=None)  # what PocEnv.deploy runs first
    (prod,) = (tmp_path / "poc").glob("*/prod_00")
    for site in ("server", "site-1", "site-2"):
        allow = json.loads((prod / site / "local" / "resources.json.default").read_text())["class_allow_list"]
        assert "flaretune." in allow and "nvflare.app_common.widgets.convert_to_fed_event.ConvertToFedEvent" in allow
