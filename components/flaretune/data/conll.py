"""CoNLL token-per-line files with IOB2 tags: read, check, write, and count.

Format: one ``TOKEN ... TAG`` line per token (the tag is the last whitespace-separated column),
a blank line between sentences; ``-DOCSTART-`` lines and ``#`` comment lines are skipped.
"""

import re
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Tuple

from flaretune.data.textfile import PathLike, read_text, split_lines, write_text
from flaretune.data.types import Sentence
from flaretune.errors import DataFormatError

BIO_MODES = ("repair", "reject")
_TAG = re.compile(r"^(?:O|[BI]-[A-Za-z][A-Za-z0-9_.-]*)$")

# called with (line, old_tag, new_tag) for every I-X that had to become B-X
RepairHook = Callable[[int, str, str], None]


def is_valid_tag(tag: str) -> bool:
    """``O``, ``B-TYPE`` or ``I-TYPE``."""
    return bool(_TAG.match(tag))


def _is_comment(columns: List[str]) -> bool:
    # "# O" is the token "#" tagged O; any other line starting with "#" is a comment.
    if not columns[0].startswith("#"):
        return False
    return not (len(columns) == 2 and columns[0] == "#" and is_valid_tag(columns[1]))


def read_conll(
    path: PathLike,
    bio: str = "repair",
    encoding: str = "utf-8",
    on_repair: Optional[RepairHook] = None,
) -> List[Sentence]:
    """Read a CoNLL file into sentences.

    ``bio="repair"`` turns an ``I-X`` that does not follow ``B-X``/``I-X`` into ``B-X`` (this also
    converts IOB1 files such as the original CoNLL-2003 to IOB2); ``bio="reject"`` raises instead.
    Every problem raises :class:`DataFormatError` naming ``path:line``.
    """
    if bio not in BIO_MODES:
        raise ValueError(f"bio must be one of {BIO_MODES}, got {bio!r}")
    lines = split_lines(read_text(path, encoding))
    sentences: List[Sentence] = []
    tokens: List[str] = []
    tags: List[str] = []

    def close_sentence():
        if tokens:
            sentences.append(Sentence(list(tokens), list(tags)))
            tokens.clear()
            tags.clear()

    for number, line in enumerate(lines, start=1):
        columns = line.split()
        if not columns:
            close_sentence()
            continue
        if columns[0] == "-DOCSTART-":
            close_sentence()
            continue
        if _is_comment(columns):
            continue
        if len(columns) < 2:
            raise DataFormatError(
                path, number, f"tag missing: {line.strip()!r} has one column; expected 'TOKEN TAG'"
            )
        tag = columns[-1]
        if not is_valid_tag(tag):
            raise DataFormatError(path, number, f"bad tag {tag!r}: expected O, B-TYPE or I-TYPE")
        if tag.startswith("I-") and (not tags or tags[-1][2:] != tag[2:]):
            after = f"after {tags[-1]!r}" if tags else "at the start of a sentence"
            fixed = "B-" + tag[2:]
            if bio == "reject":
                raise DataFormatError(
                    path, number,
                    f"invalid BIO: {tag!r} {after} (should be {fixed!r}; read with bio='repair' to fix)",
                )
            if on_repair is not None:
                on_repair(number, tag, fixed)
            tag = fixed
        tokens.append(columns[0])
        tags.append(tag)
    close_sentence()
    if not sentences:
        raise DataFormatError(path, max(1, len(lines)), "no sentences found (empty file)")
    return sentences


def write_conll(sentences: Iterable[Sentence], path: PathLike, header: Optional[str] = None) -> Path:
    """Write ``TOKEN TAG`` lines, a blank line after each sentence; ``header`` lines become ``# `` comments."""
    out: List[str] = []
    if header:
        out.extend(f"# {line}".rstrip() for line in header.splitlines())
        out.append("")
    for sentence in sentences:
        for token, tag in zip(sentence.tokens, sentence.tags):
            if not token or any(ch.isspace() for ch in token):
                raise ValueError(f"token {token!r} is empty or holds whitespace; CoNLL cannot store it")
            out.append(f"{token} {tag}")
        out.append("")
    return write_text(path, "\n".join(out) + "\n")


def entity_spans(tags: List[str]) -> List[Tuple[str, int, int]]:
    """``(type, start, end)`` per entity, ``end`` exclusive; a stray ``I-X`` starts a new entity."""
    spans: List[Tuple[str, int, int]] = []
    start, kind = None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        continues = tag.startswith("I-") and kind == tag[2:]
        if start is not None and not continues:
            spans.append((kind, start, i))
            start, kind = None, None
        if tag != "O" and not continues:
            start, kind = i, tag[2:]
    return spans


def entities(sentence: Sentence) -> List[Tuple[str, str]]:
    """``(type, surface text)`` for each entity in the sentence, text joined with single spaces."""
    return [(kind, " ".join(sentence.tokens[s:e])) for kind, s, e in entity_spans(sentence.tags)]


def entity_types(sentences: Iterable[Sentence]) -> List[str]:
    """Sorted entity types that occur in the tags."""
    return sorted({tag[2:] for s in sentences for tag in s.tags if tag != "O"})


def discover_labels(sentences: Iterable[Sentence]) -> List[str]:
    """``O`` then ``B-X``, ``I-X`` for each type X in sorted order (a stable label-id order)."""
    labels = ["O"]
    for kind in entity_types(sentences):
        labels += [f"B-{kind}", f"I-{kind}"]
    return labels


def count_tags(sentences: Iterable[Sentence]) -> Counter:
    """Tokens per tag."""
    return Counter(tag for s in sentences for tag in s.tags)


def count_entities(sentences: Iterable[Sentence]) -> Counter:
    """Entities per type."""
    return Counter(kind for s in sentences for kind, _, _ in entity_spans(s.tags))
