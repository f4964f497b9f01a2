"""Site data: one table of readers for every path (file or folder) a site points at."""

import pytest

from flaretune.data.site import load_site_fin_data, load_site_ner_data, read_task_file
from flaretune.errors import DataFormatError


def test_conll_reads_under_each_of_its_extensions(tmp_path):
    for name in ("a.conll", "a.bio", "a.txt"):
        (tmp_path / name).write_text("Aspirin B-Chemical\nhelps O\n\nGout B-Disease\n")
        assert [s.tags for s in read_task_file(tmp_path / name, "ner")] == [["B-Chemical", "O"], ["B-Disease"]]


def test_a_phrasebank_file_is_read_by_banks_and_refused_by_hospitals_in_one_line(tmp_path):
    bank = tmp_path / "train.txt"
    bank.write_bytes("Profit rose .@positive\nSales fell .@negative\n".encode("latin-1"))
    assert [e.output for e in read_task_file(bank, "instruct")] == ["positive", "negative"]
    with pytest.raises(DataFormatError, match=r"train.txt.*is a phrasebank file; ner sites read conll"):
        load_site_ner_data("site-1", str(bank))


def test_a_conll_txt_file_is_refused_by_banks(tmp_path):
    (tmp_path / "site-1").mkdir()
    (tmp_path / "site-1" / "train.txt").write_text("Aspirin B-Chemical\n")
    with pytest.raises(DataFormatError, match="is a conll file; instruct sites read jsonl, phrasebank"):
        load_site_fin_data("site-1", str(tmp_path / "{site_name}"))
