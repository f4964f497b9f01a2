"""Where a site's data comes from: its own files, or a deterministic synthetic site.

Resolution order for a site called ``site-2``:
1. ``data_path`` from the job config (``{site_name}`` is replaced by the site's name),
2. ``$FLARETUNE_DATA_DIR/site-2`` from the site's environment (so a job JSON never holds local paths),
3. the synthetic hospital (NER) or bank (instructions) ``site-2`` (seeded, clearly labelled synthetic).

NER: a folder must hold ``train.conll`` (or ``.bio``/``.txt``) and may hold ``test.conll``. Instructions: a folder must
hold ``train.jsonl`` (or a Financial PhraseBank ``train.txt``) and may hold ``test.jsonl`` /
``test.txt``. Without a test file, a seeded 10% of the training records is held out. A single
file is taken as the training file.
"""

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from flaretune.errors import ConfigError, DataFormatError

DATA_DIR_ENV = "FLARETUNE_DATA_DIR"


@dataclass
class SiteData:
    train: List
    test: List
    source: str


def _holdout(sentences: List, seed: int, fraction: float = 0.1):
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n_test = max(1, int(len(sentences) * fraction))
    test_ids = set(order[:n_test])
    return [s for i, s in enumerate(sentences) if i not in test_ids], [sentences[i] for i in sorted(test_ids)]


def _phrases_to_examples(phrases: List) -> List:
    from flaretune.data.phrasebank import to_examples

    return to_examples(phrases)


# What each task trains on, by file format (see flaretune.data.formats): the records a reader returns,
# turned into the task's record type. One table, so every path, file or folder, reads a format one way.
TASK_FORMATS: Dict[str, Dict[str, Callable[[List], List]]] = {
    "ner": {"conll": lambda records: records},
    "instruct": {"jsonl": lambda records: records, "phrasebank": _phrases_to_examples},
}
_TRAIN_NAMES = {"ner": ("conll", "bio", "txt"), "instruct": ("jsonl", "txt")}
_KIND = {"ner": "a CoNLL file", "instruct": "a .jsonl or PhraseBank .txt file"}


def read_task_file(path: Path, task: str) -> List:
    """The records of one file for ``task`` (``ner`` or ``instruct``), its format told by :func:`infer_format`."""
    from flaretune.data.formats import infer_format, read_records

    fmt = infer_format(path)
    convert = TASK_FORMATS[task].get(fmt)
    if convert is None:
        valid = ", ".join(TASK_FORMATS[task])
        raise DataFormatError(path, None, f"is a {fmt} file; {task} sites read {valid}")
    return convert(read_records(path, fmt))


def read_site_path(path: Path, seed: int, task: str) -> SiteData:
    """``path/train.<ext>`` (+ ``test.<ext>``) for the first extension present, or one file (10% held out)."""
    names = _TRAIN_NAMES[task]
    if path.is_dir():
        train_file = next((path / f"train.{ext}" for ext in names if (path / f"train.{ext}").is_file()), None)
        if train_file is None:
            expected = ", ".join(f"train.{ext}" for ext in names)
            raise DataFormatError(
                path / f"train.{names[0]}", None, f"site data folder has no {expected} (with optional test file)"
            )
        train = read_task_file(train_file, task)
        test_file = train_file.with_name("test" + train_file.suffix)
        if test_file.is_file():
            return SiteData(train, read_task_file(test_file, task), str(path))
        train, test = _holdout(train, seed)
        return SiteData(train, test, f"{train_file} (10% held out for test)")
    if path.is_file():
        train, test = _holdout(read_task_file(path, task), seed)
        return SiteData(train, test, f"{path} (10% held out for test)")
    expected = f"{_KIND[task]} or a folder with train.{names[0]}"
    raise DataFormatError(path, None, f"site data path does not exist (expected {expected})")


def _site_path(site_name: str, data_path: str) -> Optional[Path]:
    if data_path:
        return Path(data_path.replace("{site_name}", site_name)).expanduser()
    root = os.environ.get(DATA_DIR_ENV)
    return Path(root).expanduser() / site_name if root else None


def _synthetic_index(site_name: str) -> int:
    from flaretune.data.sites import site_index_from_name

    try:
        return site_index_from_name(site_name)
    except ValueError:
        raise ConfigError(
            f"site {site_name!r} has no data: set the executor's data_path or ${DATA_DIR_ENV} "
            "(synthetic sites exist only for names site-1, site-2, ...)"
        ) from None


def load_site_ner_data(
    site_name: str,
    data_path: str = "",
    seed: int = 0,
    synthetic_sites: int = 3,
    synthetic_skew: float = 0.8,
    synthetic_train_size: int = 0,
) -> SiteData:
    path = _site_path(site_name, data_path)
    if path is not None:
        return read_site_path(path, seed, "ner")
    from flaretune.data.clinical import make_hospital

    index = _synthetic_index(site_name)
    train, test = make_hospital(
        index, n_sites=max(synthetic_sites, index + 1), seed=seed, skew=synthetic_skew,
        n_train=synthetic_train_size or None,
    )
    return SiteData(train, test, f"synthetic hospital {site_name} (seed={seed}, skew={synthetic_skew})")


def load_site_fin_data(
    site_name: str,
    data_path: str = "",
    seed: int = 0,
    synthetic_sites: int = 3,
    synthetic_alpha: float = 0.5,
    synthetic_train_size: int = 0,
    synthetic_test_size: int = 100,
    synthetic_style: str = "templates",
) -> SiteData:
    """A bank's instruction data (``Example`` records): its files, or the synthetic bank (``flaretune.data.finance``).

    ``synthetic_style`` is one of ``finance.FIN_STYLES``: ``templates`` (news statements) or
    ``messages`` (customer and market messages, ``bank_messages``).
    """
    path = _site_path(site_name, data_path)
    if path is not None:
        return read_site_path(path, seed, "instruct")
    from flaretune.data.finance import make_bank

    index = _synthetic_index(site_name)
    train, test = make_bank(
        index, n_sites=max(synthetic_sites, index + 1), seed=seed, alpha=synthetic_alpha,
        n_train=synthetic_train_size or None, n_test=synthetic_test_size, style=synthetic_style,
    )
    return SiteData(
        train, test, f"SYNTHETIC bank {site_name} (seed={seed}, alpha={synthetic_alpha}, style={synthetic_style})"
    )
