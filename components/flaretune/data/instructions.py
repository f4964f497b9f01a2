"""Instruction-tuning JSON Lines: one object per line with ``instruction``, ``input``, ``output``.

Reads Alpaca records and FinGPT's (same fields; in FinGPT's sentiment sets ``output`` is a label
word). ``input`` may be absent (treated as empty); other keys are ignored.
"""

import json
from pathlib import Path
from typing import Iterable, List

from flaretune.data.textfile import PathLike, read_text, split_lines, write_text
from flaretune.data.types import Example
from flaretune.errors import DataFormatError

REQUIRED_FIELDS = ("instruction", "output")
OPTIONAL_FIELDS = ("input",)


def _parse_line(path: PathLike, number: int, line: str) -> Example:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        hint = " (a JSON array? this reader wants one object per line)" if line.lstrip().startswith("[") else ""
        raise DataFormatError(path, number, f"invalid JSON: {err.msg} at column {err.colno}{hint}") from None
    if not isinstance(record, dict):
        raise DataFormatError(path, number, f"expected a JSON object, got {type(record).__name__}")
    for field in REQUIRED_FIELDS:
        if field not in record:
            raise DataFormatError(path, number, f"missing field {field!r}; expected instruction, input, output")
    for field in REQUIRED_FIELDS + OPTIONAL_FIELDS:
        value = record.get(field, "")
        if not isinstance(value, str):
            raise DataFormatError(path, number, f"field {field!r} must be a string, got {type(value).__name__}")
    return Example(record["instruction"], record.get("input", ""), record["output"])


def read_instructions(path: PathLike, encoding: str = "utf-8") -> List[Example]:
    """Read JSON Lines records; blank lines are skipped; every problem names ``path:line``."""
    lines = split_lines(read_text(path, encoding))
    examples = [_parse_line(path, n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not examples:
        raise DataFormatError(path, max(1, len(lines)), "no records found (empty file)")
    return examples


def write_instructions(examples: Iterable[Example], path: PathLike) -> Path:
    """Write one ``{"instruction", "input", "output"}`` object per line (UTF-8, not ASCII-escaped)."""
    lines = (
        json.dumps({"instruction": e.instruction, "input": e.input, "output": e.output}, ensure_ascii=False)
        for e in examples
    )
    return write_text(path, "".join(line + "\n" for line in lines))
