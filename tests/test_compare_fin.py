"""``flaretune compare jobs/fin_instruct`` end to end on the tiny causal LM, and the model a bank gets."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flaretune.cli import main
from flaretune.compare.aggregators import SERVER_LR_GRID, rounds_to_fraction, validation_split
from flaretune.data.instructions import read_instructions, write_instructions
from flaretune.data.phrasebank import write_phrasebank
from flaretune.data.types import Phrase

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
JOB = "jobs/fin_instruct"
TINY = "tiny-smollm2"
SETTING_KEYS = {"test", "macro_f1", "per_label", "predicted", "collapse"}


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fin") / "cmp"
    args = ["compare", JOB, "--out", str(out), "--rounds", "2", "--model", TINY]
    code = main(args)
    return code, out


def test_report_schema_on_the_synthetic_banks(synthetic_run, capsys):
    code, out = synthetic_run
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["scenario"] == "fin_instruct" and report["metric"] == "accuracy"
    assert report["rounds"] == 2 and len(report["federated"]["per_round"]) == 2
    assert report["federated"]["test"] == report["federated"]["per_round"][-1]
    assert SETTING_KEYS <= set(report["federated"]) and SETTING_KEYS <= set(report["centralized"])
    assert sorted(report["local_only"]["sites"]) == ["site-1", "site-2", "site-3"]
    for setting in report["local_only"]["sites"].values():
        assert SETTING_KEYS <= set(setting)
    assert set(report["zero_shot"]) == {"test", "macro_f1", "predicted"}
    n_test = len(read_instructions(out / "data" / "shared_test.jsonl"))
    assert sum(report["zero_shot"]["predicted"].values()) == n_test == 180  # every test record answered once
    # each bank's own per-round validation is the first 20 of its 60 held-out records
    site_tests = [read_instructions(out / "data" / f"site-{i}" / "test.jsonl") for i in (1, 2, 3)]
    shared = read_instructions(out / "data" / "shared_test.jsonl")
    assert [len(t) for t in site_tests] == [20, 20, 20] and shared[60:80] == site_tests[1]
    assert "style=messages" in report["data"]  # the realistic banks are the default
    assert (out / "report.png").stat().st_size > 10_000


def _shared_test(out: Path, into: Path) -> Path:
    return write_instructions(read_instructions(out / "data" / "shared_test.jsonl"), into)


def test_zero_shot_is_the_untuned_base_scored_by_the_same_function(synthetic_run, tmp_path):
    from flaretune.compare.scenarios import SCENARIOS
    from flaretune.jobcfg import JobFolder
    from flaretune.models.lora import PeftSpec

    _, out = synthetic_run
    report = json.loads((out / "report.json").read_text())
    job = JobFolder(REPO / JOB)
    spec_args = {k: v for k, v in job.persistor_args.items() if k not in ("task", "output_dir")}
    spec = PeftSpec(**{**spec_args, "model_name": TINY})
    scenario = SCENARIOS["fin_instruct"]
    trainer = scenario.make_trainer(spec, job.executor_args, 1)
    scores = trainer.evaluate(trainer.encode(read_instructions(_shared_test(out, tmp_path / "t.jsonl"))))
    assert report["zero_shot"] == {"test": scores["accuracy"], "macro_f1": scores["macro_f1"],
                                   "predicted": {k: v["predicted"] for k, v in scores["per_label"].items()}}


def test_the_final_adapter_predicts_in_a_fresh_process_as_compare_scored_it(synthetic_run, tmp_path):
    _, out = synthetic_run
    report = json.loads((out / "report.json").read_text())
    adapter = report["adapter_dir"]
    test_file = _shared_test(out, tmp_path / "shared.jsonl")
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; from peft import PeftModel; from flaretune.models.base import "
         "load_base_model; m = PeftModel.from_pretrained(load_base_model('tiny-smollm2'), sys.argv[1]); "
         "print(sum(p.numel() for n, p in m.named_parameters() if 'lora_' in n))", adapter],
        capture_output=True, text=True, check=True)
    assert int(loaded.stdout.split()[-1]) > 0  # the LoRA tensors are there
    predicted = subprocess.run(
        [sys.executable, "-m", "flaretune.cli", "predict", adapter, str(test_file), "--out", str(tmp_path / "p.jsonl")],
        capture_output=True, text=True, check=True)
    assert f"accuracy {report['federated']['test']:.4f}, macro-F1 {report['federated']['macro_f1']:.4f}" in predicted.stdout
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 180 and all(r["prediction"] in ("positive", "negative", "neutral") for r in rows)
    counts = {label: sum(r["prediction"] == label for r in rows) for label in report["federated"]["predicted"]}
    assert counts == report["federated"]["predicted"]


def test_chat_answers_greedily_through_the_chat_template(synthetic_run, capsys):
    import torch
    from peft import PeftModel

    from flaretune.models.base import load_base_model, load_tokenizer

    _, out = synthetic_run
    adapter = json.loads((out / "report.json").read_text())["adapter_dir"]
    capsys.readouterr()
    assert main(["chat", adapter, "Is 'profit warning' good news?", "--max-new-tokens", "6"]) == 0
    answer = capsys.readouterr().out.strip()
    tokenizer = load_tokenizer(TINY)
    model = PeftModel.from_pretrained(load_base_model(TINY), adapter).eval()
    messages = [{"role": "system", "content": "You are a financial analyst."},
                {"role": "user", "content": "Is 'profit warning' good news?"}]
    ids = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                    add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                   do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert answer == tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True).strip()


def _phrases(n: int, labels):
    return [Phrase(f"Company {i} reports item {i % 7} for the quarter", labels[i % len(labels)]) for i in range(n)]


def test_user_phrasebank_files_and_a_bank_holding_one_label(tmp_path, capsys):
    from flaretune.data.splits import dirichlet_label_split

    train = _phrases(60, ["negative", "neutral", "positive"])
    write_phrasebank(train, tmp_path / "train.txt")
    write_instructions([], tmp_path / "empty.jsonl")
    test = [e for e in _phrases(12, ["negative", "neutral", "positive"])]
    write_phrasebank(test, tmp_path / "test.txt")
    alpha = 0.05
    parts = dirichlet_label_split([p.label for p in train], 2, alpha, 0)
    assert any(len({train[i].label for i in part}) == 1 for part in parts)  # the case under test happens
    out = tmp_path / "cmp"
    code = main(["compare", JOB, "--out", str(out), "--train", str(tmp_path / "train.txt"), "--test",
                 str(tmp_path / "test.txt"), "--sites", "2", "--rounds", "1", "--alpha", str(alpha), "--model", TINY])
    assert code == 0  # documented: a one-label bank still trains; its local-only score shows the cost
    report = json.loads((out / "report.json").read_text())
    sizes = [len(read_instructions(out / "data" / f"site-{i}" / "train.jsonl")) for i in (1, 2)]
    assert sorted(sizes) == sorted(len(p) for p in parts) and sum(sizes) == 60
    assert sum(report["zero_shot"]["predicted"].values()) == 12


def test_a_malformed_data_file_is_one_line_naming_path_and_line(tmp_path, capsys):
    (tmp_path / "train.txt").write_text("Profits rose@positive\nno separator on this line\n")
    write_phrasebank(_phrases(3, ["neutral"]), tmp_path / "test.txt")
    code = main(["compare", JOB, "--out", str(tmp_path / "o"), "--train", str(tmp_path / "train.txt"),
                 "--test", str(tmp_path / "test.txt"), "--model", TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"{tmp_path / 'train.txt'}:2: no '@' separator; expected 'sentence@label'"


@pytest.mark.parametrize("args, message", [
    (["--sites", "0"], "argument --sites: expected a whole number >= 1, got '0'"),
    (["--rounds", "x"], "argument --rounds: expected a whole number >= 1, got 'x'"),
    (["--alpha", "-1"], "argument --alpha: expected a number > 0, got '-1'"),
    (["--quantize", "nf5"], "Invalid quantization_type 'nf5' for --quantize"),
    (["--aggregators", "fedavg,fedsgd"], "Invalid aggregator 'fedsgd'; valid: fedavg, fedprox"),
    (["--style", "notes"], "--style 'notes' is not a fin_instruct style; valid: messages, templates"),
    (["--model", "gpt9"], "Invalid model name 'gpt9'"),
    (["--train", "missing.txt", "--test", "missing.txt"], "--train missing.txt: no such file"),
])
def test_command_line_mistakes_are_one_line_before_anything_starts(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) if args[0] in ("--sites", "--rounds", "--alpha") else _no_raise() as raised:
        code = main(["compare", JOB, "--out", str(tmp_path / "o")] + args)
    code = raised.value.code if raised is not None and hasattr(raised, "value") else code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing started


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_rounds_to_95pct_and_the_validation_split():
    assert rounds_to_fraction([0.2, 0.5, 0.9], best=0.9) == 3
    assert rounds_to_fraction([0.2, 0.86, 0.9], best=0.9) == 2  # 0.86 >= 0.855
    assert rounds_to_fraction([0.2, 0.3], best=0.9) is None
    records = list(range(50))
    train, held = validation_split(records, seed=3)
    assert len(held) == 5 and sorted(train + held) == records and held == validation_split(records, seed=3)[1]


def test_aggregator_table(tmp_path, capsys):
    out = tmp_path / "agg"
    code = main(["compare", JOB, "--out", str(out), "--aggregators", "fedavg,fedadam", "--rounds", "2",
                 "--model", TINY, "--style", "templates"])
    assert code == 0
    table = json.loads((out / "aggregators.json").read_text())
    rows = {row["aggregator"]: row for row in table["rows"]}
    assert list(rows) == ["fedavg", "fedadam"]
    for row in rows.values():
        for key in ("accuracy", "macro_f1", "rounds_to_95pct_of_best", "bytes_per_round_per_client", "wall_s",
                    "server_lr"):
            assert key in row
        assert row["rounds_to_95pct_of_best"] == rounds_to_fraction(row["per_round"], table["best"])
    assert table["best"] == max(max(r["per_round"]) for r in rows.values())
    assert rows["fedavg"]["server_lr"] is None
    assert rows["fedadam"]["server_lr"] in SERVER_LR_GRID
    assert set(rows["fedadam"]["validation"]) == {f"{lr:g}" for lr in SERVER_LR_GRID}
    best_lr = max(SERVER_LR_GRID, key=lambda lr: (rows["fedadam"]["validation"][f"{lr:g}"], -lr))
    assert rows["fedadam"]["server_lr"] == best_lr  # the documented rule, on validation scores only
    assert rows["fedadam"]["bytes_per_round_per_client"] == rows["fedavg"]["bytes_per_round_per_client"]
    assert set(table["levels"]) == {"centralized", "local_only_mean", "zero_shot"}
    assert (out / "aggregators.png").stat().st_size > 10_000
    assert "fedadam" in capsys.readouterr().out


def test_server_lr_rule_for_the_strategies_without_a_sweep():
    from types import SimpleNamespace

    from flaretune.compare.aggregators import _workflow
    from flaretune.compare.run import DEFAULT_FEDPROX_MU

    run = SimpleNamespace(job=SimpleNamespace(workflow_args={"fedprox_mu": 0.0, "server_lr": 1.0}))
    never = lambda: pytest.fail("no sweep for these")  # noqa: E731
    assert _workflow(run, "fedprox", never)["fedprox_mu"] == DEFAULT_FEDPROX_MU == 0.01  # the job's mu is 0
    run.job.workflow_args["fedprox_mu"] = 0.05
    assert _workflow(run, "fedprox", never)["fedprox_mu"] == 0.05
    assert _workflow(run, "fedavgm", never) == {"aggregator": "fedavgm", "server_lr": 1.0, "beta1": 0.9,
                                                "server_lr_rule": "fixed 1, momentum 0.9"}
    assert _workflow(run, "fedavg", never)["server_lr"] is None
