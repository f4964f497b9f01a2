"""Financial PhraseBank files (Malo et al., 2014): one ``sentence@label`` per line, Latin-1 encoded."""

from pathlib import Path
from typing import Iterable, List

from flaretune.data.textfile import PathLike, read_text, split_lines, write_text
from flaretune.data.types import SENTIMENT_INSTRUCTION, SENTIMENT_LABELS, Example, Phrase
from flaretune.errors import DataFormatError

ENCODING = "latin-1"  # the encoding the corpus ships in


def read_phrasebank(path: PathLike, encoding: str = ENCODING) -> List[Phrase]:
    """Read ``sentence@label`` lines (the label after the last ``@``); blank lines are skipped.

    Labels are matched case-insensitively against positive, negative and neutral.
    """
    lines = split_lines(read_text(path, encoding))
    phrases: List[Phrase] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        text, at, label = line.rpartition("@")
        if not at:
            raise DataFormatError(path, number, "no '@' separator; expected 'sentence@label'")
        label = label.strip().lower()
        if label not in SENTIMENT_LABELS:
            raise DataFormatError(
                path, number, f"unknown label {label!r}; expected one of {', '.join(SENTIMENT_LABELS)}"
            )
        if not text.strip():
            raise DataFormatError(path, number, "empty sentence before '@'")
        phrases.append(Phrase(text.strip(), label))
    if not phrases:
        raise DataFormatError(path, max(1, len(lines)), "no sentences found (empty file)")
    return phrases


def write_phrasebank(phrases: Iterable[Phrase], path: PathLike, encoding: str = ENCODING) -> Path:
    """Write ``sentence@label`` lines; characters Latin-1 cannot hold become ``?``."""
    text = "".join(f"{p.text}@{p.label}\n" for p in phrases)
    return write_text(path, text.encode(encoding, errors="replace").decode(encoding), encoding)


def to_examples(phrases: Iterable[Phrase]) -> List[Example]:
    """Instruction records: the sentiment question, the sentence as input, the label word as output."""
    return [Example(SENTIMENT_INSTRUCTION, p.text, p.label) for p in phrases]
