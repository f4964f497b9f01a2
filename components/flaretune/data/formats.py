"""The three file formats ``flaretune data`` reads, by name, and how to guess one from a path."""

import re
from pathlib import Path
from typing import Dict, List

from flaretune.data.conll import read_conll, write_conll
from flaretune.data.instructions import read_instructions, write_instructions
from flaretune.data.phrasebank import read_phrasebank, write_phrasebank
from flaretune.data.textfile import PathLike
from flaretune.errors import DataFormatError

FORMATS = ("conll", "phrasebank", "jsonl")
EXTENSION: Dict[str, str] = {"conll": ".conll", "phrasebank": ".txt", "jsonl": ".jsonl"}
READERS = {"conll": read_conll, "phrasebank": read_phrasebank, "jsonl": read_instructions}
WRITERS = {"conll": write_conll, "phrasebank": write_phrasebank, "jsonl": write_instructions}

_BY_EXTENSION = {".conll": "conll", ".txt": "conll", ".bio": "conll", ".jsonl": "jsonl"}
_PHRASEBANK_LINE = re.compile(r"@\s*(positive|negative|neutral)\s*$", re.IGNORECASE)


def _first_line(path: PathLike) -> str:
    try:
        with open(path, "rb") as f:
            for raw in f:
                if raw.strip():
                    return raw.decode("latin-1")
    except OSError:
        pass  # the reader reports a missing or unreadable file with its proper message
    return ""


def infer_format(path: PathLike) -> str:
    """Format from the extension: .conll/.bio/.txt -> conll, .jsonl -> jsonl.

    A ``.txt`` file whose first line ends in ``@positive``/``@negative``/``@neutral`` is a Financial
    PhraseBank file (the corpus ships as ``Sentences_*.txt``).
    """
    if Path(path).is_dir():
        raise DataFormatError(path, 0, "is a directory; expected a file")
    suffix = Path(path).suffix.lower()
    fmt = _BY_EXTENSION.get(suffix)
    if fmt is None:
        hint = " (JSON arrays are not read: convert to JSON Lines)" if suffix == ".json" else ""
        raise DataFormatError(
            path, 0, f"cannot tell the format from the extension {suffix or '(none)'!r}{hint}; "
            f"pass --format {'|'.join(FORMATS)}"
        )
    if suffix == ".txt" and _PHRASEBANK_LINE.search(_first_line(path)):
        return "phrasebank"
    return fmt


def read_records(path: PathLike, fmt: str) -> List:
    """Sentences, phrases or examples, per ``fmt``."""
    if fmt not in READERS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    return READERS[fmt](path)
