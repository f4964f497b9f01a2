"""Reading and writing users' text files so that every failure reads ``path:line: what is wrong``."""

import os
from pathlib import Path
from typing import List, Union

from flaretune.errors import DataFormatError

PathLike = Union[str, "os.PathLike[str]"]


def read_text(path: PathLike, encoding: str = "utf-8") -> str:
    """Return the whole file decoded; missing, unreadable or badly encoded files raise DataFormatError.

    A missing file or a directory is reported at line 0; a byte the codec cannot decode is reported
    at the line that holds it. A UTF-8 byte-order mark is dropped.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, 0, "file not found") from None
    except IsADirectoryError:
        raise DataFormatError(path, 0, "is a directory; expected a file") from None
    except PermissionError:
        raise DataFormatError(path, 0, "permission denied") from None
    except OSError as err:
        raise DataFormatError(path, 0, f"cannot read file ({err.strerror or err})") from None
    try:
        text = data.decode(encoding)
    except LookupError:
        raise DataFormatError(path, 0, f"unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        bad = data[err.start : err.start + 1].hex()
        raise DataFormatError(
            path, line, f"not valid {encoding}: byte 0x{bad} at column {column} ({err.reason}); "
            "re-save the file as UTF-8 or pass the right encoding"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def split_lines(text: str) -> List[str]:
    """Lines split on LF only (CRLF too): line numbers match an editor's, and a raw U+2028 inside a
    JSON string does not end the record as it would with ``str.splitlines``."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path``, creating parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path
