import json
import subprocess
import sys
from pathlib import Path

import pytest

from flaretune.cli import main
from flaretune.data.conll import read_conll, write_conll
from flaretune.data.instructions import read_instructions
from flaretune.data.phrasebank import read_phrasebank
from flaretune.data.types import Sentence

SENTENCES = [
    Sentence(["Cisplatin", "-", "induced", "nephrotoxicity", "."], ["B-Chemical", "O", "O", "B-Disease", "O"]),
    Sentence(["No", "acute", "distress", "."], ["O", "O", "O", "O"]),
] * 6


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_make_clinical_and_check(tmp_path, capsys):
    code, out, err = run(capsys, "data", "make", "clinical_ner", "--sites", "2", "--out", tmp_path, "--seed", "4",
                         "--skew", "0.5")
    assert code == 0 and err == ""
    assert f"wrote {tmp_path / 'site-2' / 'test.conll'}" in out and "lexicons:" in out
    code, out, _ = run(capsys, "data", "check", tmp_path / "site-1" / "train.conll")
    assert code == 0
    assert "sentences: 360" in out and "entities: " in out and "Procedure" in out and "Dosage" in out


def test_make_clinical_templates_style(tmp_path, capsys):
    code, out, err = run(capsys, "data", "make", "clinical_ner", "--sites", "2", "--out", tmp_path, "--style",
                         "templates")
    assert code == 0 and err == "" and "style=templates" in out
    code, out, _ = run(capsys, "data", "check", tmp_path / "site-1" / "train.conll")
    assert code == 0 and "sentences: 300" in out and "Chemical" in out and "Procedure" not in out
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "make", "clinical_ner", "--out", str(tmp_path), "--style", "prose"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'prose'" in capsys.readouterr().err


def test_make_fin_and_check(tmp_path, capsys):
    code, out, _ = run(capsys, "data", "make", "fin_instruct", "--sites", "3", "--out", tmp_path, "--alpha", "0.3")
    assert code == 0 and out.count("wrote ") == 7
    code, out, _ = run(capsys, "data", "check", tmp_path / "site-3" / "test.jsonl")
    assert code == 0 and "examples: 100" in out and "labels: " in out


def test_split_conll(tmp_path, capsys):
    source = write_conll(SENTENCES, tmp_path / "corpus.bio")
    code, out, _ = run(capsys, "data", "split", source, "--sites", "3", "--out", tmp_path / "out")
    assert code == 0
    parts = [read_conll(tmp_path / "out" / f"site-{i}" / "train.conll") for i in (1, 2, 3)]
    assert sum(map(len, parts)) == len(SENTENCES) and all(parts)


def test_split_phrasebank_is_sniffed_from_txt(tmp_path, capsys):
    source = tmp_path / "Sentences_AllAgree.txt"
    source.write_text("".join(f"Line {i} .@{('positive', 'negative', 'neutral')[i % 3]}\n" for i in range(30)),
                      encoding="latin-1")
    code, out, _ = run(capsys, "data", "split", source, "--sites", "2", "--out", tmp_path / "out", "--alpha", "0.5")
    assert code == 0 and "(phrasebank)" in out
    parts = [read_phrasebank(tmp_path / "out" / f"site-{i}" / "train.txt") for i in (1, 2)]
    assert sorted(p.text for part in parts for p in part) == sorted(f"Line {i} ." for i in range(30))


def test_split_jsonl(tmp_path, capsys):
    source = tmp_path / "fin.jsonl"
    rows = [{"instruction": "Sentiment?", "input": f"News {i}", "output": ("positive", "negative")[i % 2]}
            for i in range(20)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, _, _ = run(capsys, "data", "split", source, "--sites", "4", "--out", tmp_path / "out", "--seed", "2")
    assert code == 0
    parts = [read_instructions(tmp_path / "out" / f"site-{i}" / "train.jsonl") for i in range(1, 5)]
    assert sum(map(len, parts)) == 20 and all(parts)


def _bad_inputs(tmp_path):
    (tmp_path / "tag_missing.conll").write_text("Aspirin B-Chemical\nhelps\n", encoding="utf-8")
    (tmp_path / "bad_encoding.conll").write_bytes(b"ok O\n\nM\xe9ni\xe8re B-Disease\n")
    (tmp_path / "empty.conll").write_text("", encoding="utf-8")
    (tmp_path / "invalid.jsonl").write_text('{"instruction": "a", "output": "b"}\n{oops}\n', encoding="utf-8")
    (tmp_path / "no_at.txt").write_text("Fine .@neutral\nno label\n", encoding="latin-1")
    (tmp_path / "folder.conll").mkdir()
    return [
        (["tag_missing.conll"], "tag_missing.conll:2: tag missing"),
        (["bad_encoding.conll"], "bad_encoding.conll:3: not valid utf-8"),
        (["empty.conll"], "empty.conll:1: no sentences"),
        (["missing.conll"], "missing.conll:0: file not found"),
        (["folder.conll"], "folder.conll:0: is a directory"),
        (["invalid.jsonl"], "invalid.jsonl:2: invalid JSON"),
        (["no_at.txt", "--format", "phrasebank"], "no_at.txt:2: no '@' separator"),
        (["notes.csv"], "notes.csv:0: cannot tell the format"),
    ]


def test_check_directory_without_extension(tmp_path, capsys):
    code, _, err = run(capsys, "data", "check", tmp_path)
    assert code == 2 and err == f"{tmp_path}:0: is a directory; expected a file\n"


def test_check_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    for args, expected in _bad_inputs(tmp_path):
        args = [str(tmp_path / args[0])] + args[1:]
        code, out, err = run(capsys, "data", "check", *args)
        assert code == 2, args
        assert err.startswith(str(tmp_path / expected)), err
        assert err.count("\n") == 1 and "Traceback" not in err and out == ""


def test_check_reports_repairs_or_rejects(tmp_path, capsys):
    path = tmp_path / "iob1.conll"
    path.write_text("the O\nkidney I-Disease\ninjury I-Disease\n", encoding="utf-8")
    code, out, _ = run(capsys, "data", "check", path)
    assert code == 0 and "repaired BIO tags: 1 (first at line 2: I-Disease -> B-Disease)" in out
    code, _, err = run(capsys, "data", "check", path, "--bio", "reject")
    assert code == 2 and err.startswith(f"{path}:2: invalid BIO")


def test_split_too_few_records(tmp_path, capsys):
    source = write_conll(SENTENCES[:2], tmp_path / "tiny.conll")
    code, _, err = run(capsys, "data", "split", source, "--sites", "3", "--out", tmp_path / "out")
    assert code == 2 and "too few for 3 sites" in err


def test_bad_arguments_are_usage_errors(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["data", "make", "clinical_ner", "--out", str(tmp_path), "--skew", "1.5"])
    assert info.value.code == 2


def test_console_script_and_no_heavy_imports(tmp_path):
    script = Path(sys.executable).with_name("flaretune")
    assert script.exists(), "the flaretune console script is not installed in this environment"
    bad = tmp_path / "bad.conll"
    bad.write_text("Aspirin B-Chemical\nhelps\n", encoding="utf-8")
    result = subprocess.run([str(script), "data", "check", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr == f"{bad}:2: tag missing: 'helps' has one column; " \
                                                      "expected 'TOKEN TAG'\n"
    probe = ("import sys, flaretune.cli, flaretune.data.cli, flaretune.data.clinical, flaretune.data.finance;"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'nvflare')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]"
