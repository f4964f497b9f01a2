"""``flaretune compare`` end to end on the tiny model: federated (simulator), centralized, local-only."""

import json
from pathlib import Path

import pytest

from flaretune.cli import main
from flaretune.data.clinical import make_clinical_dataset
from flaretune.data.conll import read_conll, write_conll

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
JOB = "jobs/clinical_ner"


def _check_report(out, rounds, sites):
    report = json.loads((out / "report.json").read_text())
    for key in ("scenario", "metric", "federated", "centralized", "local_only", "bytes_per_round_per_client",
                "full_model_bytes", "rounds", "wall_s"):
        assert key in report
    assert report["scenario"] == "clinical_ner" and report["metric"] == "entity_f1"
    assert len(report["federated"]["per_round"]) == rounds == report["rounds"]
    scores = [report["federated"]["test"], report["centralized"]["test"], report["local_only"]["mean"],
              *report["federated"]["per_round"], *report["local_only"]["per_site"].values()]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert sorted(report["local_only"]["per_site"]) == [f"site-{i}" for i in range(1, sites + 1)]
    assert report["federated"]["test"] == report["federated"]["per_round"][-1]
    assert 0 < report["bytes_per_round_per_client"] < report["full_model_bytes"]
    assert (out / "report.png").stat().st_size > 10_000
    return report


def test_compare_on_synthetic_hospitals(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "cmp"
    assert main(["compare", JOB, "--out", str(out), "--rounds", "2", "--model", "tiny-minilm-ner"]) == 0
    report = _check_report(out, rounds=2, sites=3)
    printed = capsys.readouterr().out
    assert "[2/5] federated" in printed and "round 2/2 done" in printed and "local-only (mean)" in printed
    # the union of every site's held-out split is the shared test set
    n_test = sum(len(read_conll(out / "data" / f"site-{i}" / "test.conll")) for i in (1, 2, 3))
    assert n_test == 180
    assert report["quantization"] == "float16"  # as jobs/clinical_ner ships


def test_compare_on_user_conll_files(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    src = tmp_path / "src"
    make_clinical_dataset(src, n_sites=2, seed=5, n_train=60, n_test=20)
    train = [s for i in (1, 2) for s in read_conll(src / f"site-{i}" / "train.conll")]
    test = [s for i in (1, 2) for s in read_conll(src / f"site-{i}" / "test.conll")]
    write_conll(train, tmp_path / "train.conll")
    write_conll(test, tmp_path / "test.conll")
    out = tmp_path / "cmp"
    args = ["compare", JOB, "--out", str(out), "--train", str(tmp_path / "train.conll"),
            "--test", str(tmp_path / "test.conll"), "--sites", "2", "--rounds", "1", "--model", "tiny-minilm-ner"]
    assert main(args) == 0
    _check_report(out, rounds=1, sites=2)
    parts = [read_conll(out / "data" / f"site-{i}" / "train.conll") for i in (1, 2)]
    assert sum(len(p) for p in parts) == len(train)  # every training sentence lands at exactly one site
    assert len(read_conll(out / "data" / "site-1" / "test.conll")) == len(test)


def test_compare_needs_both_files(tmp_path, capsys):
    assert main(["compare", JOB, "--out", str(tmp_path), "--train", "x.conll"]) == 2
    assert "--train and --test" in capsys.readouterr().err
