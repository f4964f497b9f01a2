import pytest

from flaretune.data.phrasebank import read_phrasebank, to_examples, write_phrasebank
from flaretune.data.types import SENTIMENT_INSTRUCTION, Example, Phrase
from flaretune.errors import DataFormatError


def test_reads_latin1_label_after_last_at(tmp_path):
    path = tmp_path / "Sentences_50Agree.txt"
    text = "Sales in Espoo rose 5 % , write to ir@firm.fi .@Positive\n\nN\u00e4in sanoi johtaja .@neutral\n"
    path.write_bytes(text.encode("latin-1"))
    assert read_phrasebank(path) == [
        Phrase("Sales in Espoo rose 5 % , write to ir@firm.fi .", "positive"),
        Phrase("N\u00e4in sanoi johtaja .", "neutral"),
    ]


def test_round_trip_and_examples(tmp_path):
    phrases = [Phrase("Profit fell .", "negative"), Phrase("K\u00e4rkk\u00e4inen joined .", "neutral")]
    assert read_phrasebank(write_phrasebank(phrases, tmp_path / "p.txt")) == phrases
    assert to_examples(phrases)[0] == Example(SENTIMENT_INSTRUCTION, "Profit fell .", "negative")


@pytest.mark.parametrize(
    "content, line, message",
    [
        ("Fine .@neutral\nNo separator here\n", 2, "no '@' separator"),
        ("Fine .@neutral\nBad .@bullish\n", 2, "unknown label 'bullish'"),
        ("@positive\n", 1, "empty sentence"),
        ("\n\n", 2, "no sentences"),
    ],
)
def test_bad_lines(tmp_path, content, line, message):
    path = tmp_path / "p.txt"
    path.write_text(content, encoding="latin-1")
    with pytest.raises(DataFormatError) as info:
        read_phrasebank(path)
    assert str(info.value).startswith(f"{path}:{line}: ") and message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"missing\.txt:0: file not found"):
        read_phrasebank(tmp_path / "missing.txt")
