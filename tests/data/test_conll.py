import pytest

from flaretune.data.conll import (
    count_entities,
    discover_labels,
    entities,
    entity_spans,
    entity_types,
    read_conll,
    write_conll,
)
from flaretune.data.types import CLINICAL_LABELS, Sentence
from flaretune.errors import DataFormatError

SENTENCES = [
    Sentence(["Cisplatin", "-", "induced", "acute", "kidney", "injury", "."],
             ["B-Chemical", "O", "O", "B-Disease", "I-Disease", "I-Disease", "O"]),
    Sentence(["Vital", "signs", "stable", "."], ["O", "O", "O", "O"]),
    Sentence(["#", "3", "magnesium", "hydroxide"], ["O", "O", "B-Chemical", "I-Chemical"]),
]


def _write(tmp_path, text, name="x.conll", mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_round_trip_with_header(tmp_path):
    path = write_conll(SENTENCES, tmp_path / "sub" / "a.conll", header="SYNTHETIC data\nseed=0")
    assert path.read_text(encoding="utf-8").startswith("# SYNTHETIC data\n# seed=0\n")
    assert read_conll(path) == SENTENCES  # the "# O" token line survives, the header does not


def test_docstart_comments_and_last_column_tag(tmp_path):
    path = _write(tmp_path, "-DOCSTART- -X- O O\n\n# a comment\nAspirin NN B-NP B-Chemical\nhelps VBZ B-VP O\n"
                            "-DOCSTART- -X- O O\nPain NN B-NP B-Disease\n")
    assert read_conll(path) == [
        Sentence(["Aspirin", "helps"], ["B-Chemical", "O"]),
        Sentence(["Pain"], ["B-Disease"]),
    ]


def test_labels_and_types():
    assert discover_labels(SENTENCES) == CLINICAL_LABELS
    assert entity_types(SENTENCES) == ["Chemical", "Disease"]
    assert count_entities(SENTENCES) == {"Chemical": 2, "Disease": 1}
    assert entities(SENTENCES[0]) == [("Chemical", "Cisplatin"), ("Disease", "acute kidney injury")]


def test_entity_spans_are_end_exclusive_and_split_on_type_change():
    spans = entity_spans(["B-A", "I-A", "I-B", "O", "B-A", "B-A"])
    assert spans == [("A", 0, 2), ("B", 2, 3), ("A", 4, 5), ("A", 5, 6)]


def test_bio_repair_and_reject(tmp_path):
    path = _write(tmp_path, "the O\nkidney I-Disease\ninjury I-Disease\n\nheparin I-Chemical\n")
    repairs = []
    sentences = read_conll(path, on_repair=lambda *r: repairs.append(r))
    assert sentences[0].tags == ["O", "B-Disease", "I-Disease"]
    assert sentences[1].tags == ["B-Chemical"]
    assert repairs == [(2, "I-Disease", "B-Disease"), (5, "I-Chemical", "B-Chemical")]
    with pytest.raises(DataFormatError, match=r"x\.conll:2: invalid BIO: 'I-Disease' after 'O'"):
        read_conll(path, bio="reject")


@pytest.mark.parametrize(
    "content, line, message",
    [
        ("good O\nlonely\n", 2, "tag missing"),
        ("good O\n\nbad S-Disease\n", 3, "bad tag 'S-Disease'"),
        (b"ok O\nfine O\nsch\xf6n O\n", 3, "not valid utf-8: byte 0xf6"),
        ("", 1, "no sentences"),
        ("# only a header\n\n", 2, "no sentences"),
    ],
    ids=["tag-missing", "bad-tag", "bad-encoding", "empty", "only-comments"],
)
def test_bad_input_names_path_and_line(tmp_path, content, line, message):
    path = _write(tmp_path, content, mode="wb" if isinstance(content, bytes) else "w")
    with pytest.raises(DataFormatError) as info:
        read_conll(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert message in str(info.value)


def test_missing_file_and_directory_are_line_zero(tmp_path):
    with pytest.raises(DataFormatError, match=r":0: file not found"):
        read_conll(tmp_path / "nope.conll")
    with pytest.raises(DataFormatError, match=r":0: is a directory"):
        read_conll(tmp_path)


def test_sentence_validates_lengths_and_writer_rejects_spaces(tmp_path):
    with pytest.raises(ValueError):
        Sentence(["a", "b"], ["O"])
    with pytest.raises(ValueError):
        write_conll([Sentence(["two words"], ["O"])], tmp_path / "x.conll")
