import json

from flaretune.cli import main
from flaretune.provisioning.policy import ALLOW_PREFIX, allow_in_local_dir, allow_in_workspace


def test_simulator_workspace_gets_defaults_plus_flaretune(tmp_path):
    (path,) = allow_in_workspace(tmp_path / "ws")
    allow = json.loads(path.read_text())["class_allow_list"]
    assert ALLOW_PREFIX in allow
    assert any(entry.startswith("nvflare.app_common") for entry in allow)


def test_existing_policy_is_extended_not_replaced(tmp_path):
    local = tmp_path / "site-1" / "local"
    local.mkdir(parents=True)
    (tmp_path / "site-1" / "startup").mkdir()
    (local / "resources.json.default").write_text(json.dumps({"format_version": 2, "class_allow_list": ["my.org."], "x": 1}))
    paths = allow_in_workspace(tmp_path)
    assert paths == [local / "resources.json"]
    data = json.loads(paths[0].read_text())
    assert data["class_allow_list"] == ["my.org.", ALLOW_PREFIX]
    assert data["x"] == 1
    allow_in_local_dir(local)  # idempotent
    assert json.loads(paths[0].read_text())["class_allow_list"].count(ALLOW_PREFIX) == 1


def test_site_policy_command(tmp_path, capsys):
    assert main(["site-policy", str(tmp_path / "ws")]) == 0
    assert "allowed 'flaretune.'" in capsys.readouterr().out
