"""Where a site's NER data comes from: its own files, or the deterministic synthetic hospital.

Resolution order for a site called ``site-2``:
1. ``data_path`` from the job config (``{site_name}`` is replaced by the site's name),
2. ``$FLARETUNE_DATA_DIR/site-2`` from the site's environment (so a job JSON never holds local paths),
3. the synthetic hospital ``site-2`` (seeded, clearly labelled synthetic).

A folder must hold ``train.conll`` and may hold ``test.conll``; without one, a seeded 10% of the
training sentences is held out. A single file is taken as the training file.
"""

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import List

from flaretune.errors import DataFormatError

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


def _read_folder_or_file(path: Path, seed: int) -> SiteData:
    from flaretune.data.conll import read_conll

    if path.is_dir():
        train_file = path / "train.conll"
        if not train_file.is_file():
            raise DataFormatError(train_file, None, "site data folder has no train.conll (expected train.conll, test.conll)")
        train = read_conll(train_file)
        test_file = path / "test.conll"
        if test_file.is_file():
            return SiteData(train, read_conll(test_file), str(path))
        train, test = _holdout(train, seed)
        return SiteData(train, test, f"{train_file} (10% held out for test)")
    if path.is_file():
        train, test = _holdout(read_conll(path), seed)
        return SiteData(train, test, f"{path} (10% held out for test)")
    raise DataFormatError(path, None, "site data path does not exist (expected a CoNLL file or a folder with train.conll)")


def load_site_ner_data(
    site_name: str,
    data_path: str = "",
    seed: int = 0,
    synthetic_sites: int = 3,
    synthetic_skew: float = 0.8,
    synthetic_train_size: int = 0,
) -> SiteData:
    if data_path:
        return _read_folder_or_file(Path(data_path.replace("{site_name}", site_name)).expanduser(), seed)
    root = os.environ.get(DATA_DIR_ENV)
    if root:
        return _read_folder_or_file(Path(root).expanduser() / site_name, seed)
    from flaretune.data.clinical import make_hospital
    from flaretune.data.sites import site_index_from_name

    index = site_index_from_name(site_name)
    train, test = make_hospital(
        index, n_sites=max(synthetic_sites, index + 1), seed=seed, skew=synthetic_skew,
        n_train=synthetic_train_size or None,
    )
    return SiteData(train, test, f"synthetic hospital {site_name} (seed={seed}, skew={synthetic_skew})")
