"""The data of a comparison: per-site training files and one shared test set.

Synthetic sites: each site's own train/test split; the shared test set is the union of every
site's held-out split. User data: the training file is split across sites non-IID (NER: by entity
mix; instructions: Dirichlet alpha over labels, so banks differ in label mix and size), and the
user's test file is the shared test set (and every site's local test split).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from flaretune.errors import ConfigError, FlaretuneError


@dataclass
class ComparisonData:
    root: Path  # holds site-N/train.* and site-N/test.*; the job's data_path is root/{site_name}
    site_train: Dict[str, List]
    test: List
    labels: List[str]
    description: str


def _both_or_neither(train_file, test_file) -> None:
    if bool(train_file) != bool(test_file):
        raise ConfigError("give both --train and --test, or neither (synthetic sites)")


def _check_style(style: str, valid) -> None:
    if style not in valid:
        raise ConfigError(f"Invalid synthetic style {style!r}; valid: {', '.join(valid)}")


def prepare_ner(
    out_dir, n_sites: int, seed: int, skew: float, train_file: Optional[str], test_file: Optional[str],
    style: str = "notes",
) -> ComparisonData:
    """Write the comparison's hospital files under ``out_dir/data``; ``style`` picks the synthetic
    generator ("notes" or "templates") and its label list when no files are given."""
    from flaretune.data.conll import discover_labels, read_conll, write_conll
    from flaretune.data.sites import site_name

    root = Path(out_dir) / "data"
    _both_or_neither(train_file, test_file)
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

    _check_style(style, STYLES)
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


def _read_instructions(path) -> List:
    from flaretune.data.site import read_task_file

    return read_task_file(Path(path), "instruct")


def prepare_fin(
    out_dir, n_sites: int, seed: int, alpha: float, train_file: Optional[str], test_file: Optional[str],
    style: str = "messages",
) -> ComparisonData:
    """Write the comparison's bank files (instruction JSONL) under ``out_dir/data``.

    User files (Financial PhraseBank ``sentence@label`` or instruction JSONL) are split by Dirichlet
    ``alpha`` over the answer labels (:func:`flaretune.data.splits.dirichlet_label_split`), so the
    banks differ in label mix and in size. A bank may end up holding a single label: it still
    trains, and local-only shows what that costs it.
    """
    from flaretune.data.instructions import write_instructions
    from flaretune.data.sites import site_name
    from flaretune.data.types import SENTIMENT_LABELS

    root = Path(out_dir) / "data"
    _both_or_neither(train_file, test_file)
    site_train: Dict[str, List] = {}
    if train_file:
        from flaretune.data.splits import dirichlet_label_split

        train, test = _read_instructions(train_file), _read_instructions(test_file)
        if len(train) < n_sites:
            raise FlaretuneError(f"{train_file} has {len(train)} records: too few for {n_sites} sites")
        parts = dirichlet_label_split([e.output.strip().lower() for e in train], n_sites, alpha, seed)
        for index, indices in enumerate(parts):
            name = site_name(index)
            site_train[name] = [train[i] for i in indices]
            write_instructions(site_train[name], root / name / "train.jsonl")
            write_instructions(test, root / name / "test.jsonl")
        return ComparisonData(root, site_train, test, list(SENTIMENT_LABELS),
                              f"{train_file} split over {n_sites} banks (Dirichlet alpha={alpha}); test {test_file}")

    from flaretune.data.finance import FIN_STYLES, make_fin_dataset

    _check_style(style, FIN_STYLES)
    make_fin_dataset(root, n_sites=n_sites, seed=seed, alpha=alpha, n_test=FIN_TEST_PER_BANK, style=style)
    test: List = []
    for index in range(n_sites):
        name = site_name(index)
        site_train[name] = _read_instructions(root / name / "train.jsonl")
        held_out = _read_instructions(root / name / "test.jsonl")
        test.extend(held_out)
        # the banks' own validation in the federation is a progress display: a slice keeps it cheap
        write_instructions(held_out[:FIN_SITE_PROGRESS_TEST], root / name / "test.jsonl")
    write_instructions(test, root / "shared_test.jsonl")
    return ComparisonData(
        root, site_train, test, list(SENTIMENT_LABELS),
        f"{n_sites} SYNTHETIC banks (style={style}, seed={seed}, alpha={alpha}); test = union of their held-out "
        f"splits ({FIN_TEST_PER_BANK} each, data/shared_test.jsonl)",
    )


FIN_TEST_PER_BANK = 60  # 180 shared test examples at 3 banks: ~50 s to score on 2 cores with SmolLM2-135M
FIN_SITE_PROGRESS_TEST = 20  # what each bank scores before and after its local steps, every round
