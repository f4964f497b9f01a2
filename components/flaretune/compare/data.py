"""The data of a comparison: per-site training files and one shared test set.

Synthetic hospitals: each site's own train/test split; the shared test set is the union of every
site's held-out split. User data: the CoNLL training file is split across sites non-IID by entity
mix, and the user's test file is the shared test set (and every site's local test split).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional


@dataclass
class ComparisonData:
    root: Path  # holds site-N/train.conll and site-N/test.conll, the job's data_path is root/{site_name}
    site_train: Dict[str, List]
    test: List
    labels: List[str]
    description: str


def prepare(
    out_dir, n_sites: int, seed: int, skew: float, train_file: Optional[str], test_file: Optional[str],
    style: str = "notes",
):
    """Write the comparison's site files under ``out_dir/data``; ``style`` picks the synthetic
    generator ("notes" or "templates") and its label list when no files are given."""
    from flaretune.data.conll import discover_labels, read_conll, write_conll
    from flaretune.data.sites import site_name

    root = Path(out_dir) / "data"
    if bool(train_file) != bool(test_file):
        from flaretune.errors import ConfigError

        raise ConfigError("give both --train and --test, or neither (synthetic hospitals)")
    site_train: Dict[str, List] = {}
    if train_file:
        from flaretune.data.splits import split_by_entity_mix

        train, test = read_conll(train_file), read_conll(test_file)
        labels = discover_labels(train + test)
        for index, part in enumerate(split_by_entity_mix(train, n_sites, seed=seed, skew=skew)):
            name = site_name(index)
            site_train[name] = part
            write_conll(part, root / name / "train.conll", header=f"split {index + 1}/{n_sites} of {train_file}")
            write_conll(test, root / name / "test.conll", header=f"copy of {test_file}")
        return ComparisonData(root, site_train, test, labels, f"{train_file} split over {n_sites} sites; test {test_file}")

    from flaretune.data.clinical import STYLES, labels_for_style, make_clinical_dataset

    if style not in STYLES:
        from flaretune.errors import ConfigError

        raise ConfigError(f"Invalid synthetic style {style!r}; valid: {', '.join(STYLES)}")
    make_clinical_dataset(root, n_sites=n_sites, seed=seed, skew=skew, style=style)
    test: List = []
    for index in range(n_sites):
        name = site_name(index)
        site_train[name] = read_conll(root / name / "train.conll")
        test.extend(read_conll(root / name / "test.conll"))
    return ComparisonData(
        root, site_train, test, labels_for_style(style),
        f"{n_sites} synthetic hospitals (style={style}, seed={seed}, skew={skew}); "
        "test = union of their held-out splits",
    )
