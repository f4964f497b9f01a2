"""Where a site's data comes from: its own files, or a deterministic synthetic site.

Resolution order for a site called ``site-2``:
1. ``data_path`` from the job config (``{site_name}`` is replaced by the site's name),
2. ``$FLARETUNE_DATA_DIR/site-2`` from the site's environment (so a job JSON never holds local paths),
3. the synthetic hospital (NER) or bank (instructions) ``site-2`` (seeded, clearly labelled synthetic).

NER: a folder must hold ``train.conll`` and may hold ``test.conll``. Instructions: a folder must
hold ``train.jsonl`` (or a Financial PhraseBank ``train.txt``) and may hold ``test.jsonl`` /
``test.txt``. Without a test file, a seeded 10% of the training records is held out. A single
file is taken as the training file.
"""

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

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


def _read_folder_or_file(
    path: Path, seed: int, read: Callable[[Path], List] = None, names: Sequence[str] = ("conll",), kind: str = "a CoNLL file"
) -> SiteData:
    """``path/train.<ext>`` (+ ``test.<ext>``) for the first extension in ``names`` present, or one file."""
    if read is None:
        from flaretune.data.conll import read_conll as read
    if path.is_dir():
        expected = ", ".join(f"train.{ext}" for ext in names)
        train_file = next((path / f"train.{ext}" for ext in names if (path / f"train.{ext}").is_file()), None)
        if train_file is None:
            raise DataFormatError(path / f"train.{names[0]}", None, f"site data folder has no {expected} (with optional test file)")
        train = read(train_file)
        test_file = train_file.with_name("test" + train_file.suffix)
        if test_file.is_file():
            return SiteData(train, read(test_file), str(path))
        train, test = _holdout(train, seed)
        return SiteData(train, test, f"{train_file} (10% held out for test)")
    if path.is_file():
        train, test = _holdout(read(path), seed)
        return SiteData(train, test, f"{path} (10% held out for test)")
    raise DataFormatError(path, None, f"site data path does not exist (expected {kind} or a folder with train.{names[0]})")


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
        return _read_folder_or_file(path, seed)
    from flaretune.data.clinical import make_hospital

    index = _synthetic_index(site_name)
    train, test = make_hospital(
        index, n_sites=max(synthetic_sites, index + 1), seed=seed, skew=synthetic_skew,
        n_train=synthetic_train_size or None,
    )
    return SiteData(train, test, f"synthetic hospital {site_name} (seed={seed}, skew={synthetic_skew})")


def read_instruction_file(path: Path) -> List:
    """Instruction ``Example`` records from JSON Lines, or from a Financial PhraseBank ``sentence@label`` file (``.txt``)."""
    if path.suffix.lower() == ".txt":
        from flaretune.data.phrasebank import read_phrasebank, to_examples

        return to_examples(read_phrasebank(path))
    from flaretune.data.instructions import read_instructions

    return read_instructions(path)


def load_site_fin_data(
    site_name: str,
    data_path: str = "",
    seed: int = 0,
    synthetic_sites: int = 3,
    synthetic_alpha: float = 0.5,
    synthetic_train_size: int = 0,
    synthetic_test_size: int = 100,
) -> SiteData:
    """A bank's instruction data (``Example`` records): its files, or the synthetic bank of ``flaretune.data.finance``."""
    path = _site_path(site_name, data_path)
    if path is not None:
        return _read_folder_or_file(
            path, seed, read_instruction_file, names=("jsonl", "txt"), kind="a .jsonl or PhraseBank .txt file"
        )
    from flaretune.data.finance import make_bank

    index = _synthetic_index(site_name)
    train, test = make_bank(
        index, n_sites=max(synthetic_sites, index + 1), seed=seed, alpha=synthetic_alpha,
        n_train=synthetic_train_size or None, n_test=synthetic_test_size,
    )
    return SiteData(train, test, f"SYNTHETIC bank {site_name} (seed={seed}, alpha={synthetic_alpha})")
