import json

import pytest

from flaretune.data.instructions import read_instructions, write_instructions
from flaretune.data.types import Example
from flaretune.errors import DataFormatError


def test_alpaca_and_fingpt_records(tmp_path):
    path = tmp_path / "mix.jsonl"
    records = [
        {"instruction": "Summarise.", "input": "Q3 was strong.", "output": "Strong quarter."},
        {"instruction": "What is the sentiment of this news?", "input": "Shares fell.", "output": "negative",
         "source": "fingpt-sentiment"},
        {"instruction": "Name a bank.", "output": "Nordea"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    assert read_instructions(path) == [
        Example("Summarise.", "Q3 was strong.", "Strong quarter."),
        Example("What is the sentiment of this news?", "Shares fell.", "negative"),
        Example("Name a bank.", "", "Nordea"),
    ]


def test_round_trip_keeps_unicode(tmp_path):
    examples = [Example("Übersetze.", "Gewinn stieg um 5 €.", "Profit rose by €5.")]
    path = write_instructions(examples, tmp_path / "a" / "train.jsonl")
    assert "€" in path.read_text(encoding="utf-8")
    assert read_instructions(path) == examples


@pytest.mark.parametrize(
    "content, line, message",
    [
        ('{"instruction": "a", "output": "b"}\n{"instruction": "a", \n', 2, "invalid JSON"),
        ('{"instruction": "a", "input": "x"}\n', 1, "missing field 'output'"),
        ('{"instruction": "a", "input": 3, "output": "b"}\n', 1, "field 'input' must be a string"),
        ('["a", "b"]\n', 1, "expected a JSON object, got list"),
        ('[\n{"instruction": "a", "output": "b"}\n]\n', 1, "JSON array"),
        ("\n", 1, "no records"),
    ],
    ids=["invalid-json", "missing-field", "non-string", "not-object", "json-array", "empty"],
)
def test_bad_records_name_path_and_line(tmp_path, content, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        read_instructions(path)
    assert str(info.value).startswith(f"{path}:{line}: ") and message in str(info.value)


def test_unicode_line_separator_inside_a_string_is_not_a_line_break(tmp_path):
    path = tmp_path / "ls.jsonl"
    path.write_text('{"instruction": "a\u2028b", "output": "c"}\r\n{"instruction": "x", "output": 1}\n',
                    encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"ls\.jsonl:2: field 'output' must be a string"):
        read_instructions(path)


def test_bad_encoding_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "\xff", "output": "b"}\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: not valid utf-8"):
        read_instructions(path)
