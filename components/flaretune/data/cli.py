"""``flaretune data ...``: make synthetic site datasets, split a corpus across sites, check a file.

Bad input never shows a traceback: readers raise DataFormatError (``path:line: what is wrong``),
which ``flaretune.cli.main`` prints to stderr with exit code 2.
"""

import time
from pathlib import Path
from typing import Callable, List

from flaretune.data.conll import read_conll
from flaretune.data.finance import FIN_STYLES
from flaretune.data.formats import EXTENSION, FORMATS, WRITERS, infer_format, read_records
from flaretune.data.sites import site_name
from flaretune.data.summary import SUMMARIES, label_counts
from flaretune.cliargs import positive_float, positive_int, unit_float
from flaretune.errors import FlaretuneError

_MAX_TASKS = 50  # a jsonl file with at most this many distinct instructions is split by task


def _writing(out: Path, action: Callable[[], List[Path]]) -> List[Path]:
    try:
        return action()
    except OSError as err:
        raise FlaretuneError(f"cannot write under {out}: {err.strerror or err} ({err.filename or out})") from None


def _make_clinical(args) -> int:
    from flaretune.data.clinical import make_clinical_dataset
    from flaretune.data.lexicon import load_lexicon

    lexicon = load_lexicon()
    print(f"lexicons: {len(lexicon.chemicals)} chemical and {len(lexicon.diseases)} disease names "
          f"loaded in {lexicon.load_seconds:.2f} s")
    start = time.perf_counter()
    paths = _writing(
        args.out, lambda: make_clinical_dataset(args.out, args.sites, args.seed, args.skew, style=args.style)
    )
    for path in paths:
        print(f"wrote {path}")
    print(f"SYNTHETIC clinical NER: {args.sites} sites in {time.perf_counter() - start:.2f} s "
          f"(skew={args.skew}, style={args.style})")
    return 0


def _make_fin(args) -> int:
    from flaretune.data.finance import make_fin_dataset

    paths = _writing(
        args.out, lambda: make_fin_dataset(args.out, args.sites, args.seed, args.alpha, style=args.style)
    )
    for path in paths:
        print(f"wrote {path}")
    print(f"SYNTHETIC financial sentiment: {args.sites} banks (alpha={args.alpha}, style={args.style})")
    return 0


def _split_labels(fmt: str, records: list) -> list:
    if fmt == "phrasebank":
        return [p.label for p in records]
    if label_counts(records):
        return [e.output.strip() for e in records]
    if len({e.instruction for e in records}) <= _MAX_TASKS:
        print("outputs are free text: splitting by instruction (task) instead of label")
        return [e.instruction for e in records]
    print("outputs and instructions are free text: splitting with one class (sizes still differ)")
    return [0] * len(records)


def _split(args) -> int:
    from flaretune.data.splits import dirichlet_label_split, split_by_entity_mix

    fmt = args.format or infer_format(args.file)
    records = read_records(args.file, fmt)
    if len(records) < args.sites:
        raise FlaretuneError(f"{args.file} has {len(records)} records: too few for {args.sites} sites")
    if fmt == "conll":
        parts = split_by_entity_mix(records, args.sites, seed=args.seed, skew=args.skew)
        how = f"by entity mix (skew={args.skew})"
    else:
        indices = dirichlet_label_split(_split_labels(fmt, records), args.sites, args.alpha, args.seed)
        parts = [[records[i] for i in site] for site in indices]
        how = f"by Dirichlet label mix (alpha={args.alpha})"
    print(f"{args.file}: {len(records)} records ({fmt}) split {how}")

    def write() -> List[Path]:
        return [
            WRITERS[fmt](part, args.out / site_name(i) / f"train{EXTENSION[fmt]}") for i, part in enumerate(parts)
        ]

    for path, part in zip(_writing(args.out, write), parts):
        print(f"wrote {path} ({len(part)} records)")
    return 0


def _check(args) -> int:
    fmt = args.format or infer_format(args.file)
    repairs = []
    if fmt == "conll":
        records = read_conll(args.file, bio=args.bio, on_repair=lambda *r: repairs.append(r))
    else:
        records = read_records(args.file, fmt)
    print(f"{args.file}: {fmt}, OK")
    for line in SUMMARIES[fmt](records):
        print(f"  {line}")
    if repairs:
        line, old, new = repairs[0]
        print(f"  repaired BIO tags: {len(repairs)} (first at line {line}: {old} -> {new})")
    return 0


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="make, split and check datasets")
    sub = data.add_subparsers(dest="data_command", required=True)

    make = sub.add_parser("make", help="write a SYNTHETIC multi-site dataset")
    kinds = make.add_subparsers(dest="dataset", required=True)
    clinical = kinds.add_parser(
        "clinical_ner", help="hospitals with clinical NER notes (non-IID by specialty)"
    )
    clinical.add_argument("--skew", type=unit_float, default=0.8, help="0 = IID sites, 1 = disjoint vocabularies")
    clinical.add_argument(
        "--style", choices=("notes", "templates"), default="notes",
        help="notes: telegraphic, imbalanced, noisy notes with 6 entity types (default); "
             "templates: tidy Chemical/Disease sentences",
    )
    clinical.set_defaults(func=_make_clinical)
    fin = kinds.add_parser(
        "fin_instruct", aliases=["fin"], help="banks with sentiment instructions (non-IID label mix)"
    )
    fin.add_argument("--alpha", type=positive_float, default=0.5, help="Dirichlet alpha; smaller = more skew")
    fin.add_argument(
        "--style", choices=FIN_STYLES, default="templates",
        help="templates: tidy news statements (default); messages: customer and market messages with "
             "casing, handles, URLs, typos, mixed cues, a 50/35/15 neg/neu/pos prior and 8%% label noise",
    )
    fin.set_defaults(func=_make_fin)
    for kind in (clinical, fin):
        kind.add_argument("--sites", type=positive_int, default=3, help="number of sites (default 3)")
        kind.add_argument("--out", type=Path, required=True, help="output folder (site-N/ inside)")
        kind.add_argument("--seed", type=int, default=0)

    split = sub.add_parser("split", help="split one file across sites, non-IID")
    split.add_argument("file", type=Path)
    split.add_argument("--sites", type=positive_int, required=True)
    split.add_argument("--out", type=Path, required=True, help="writes OUT/site-N/train.<ext>")
    split.add_argument("--alpha", type=positive_float, default=0.5, help="Dirichlet alpha (phrasebank, jsonl)")
    split.add_argument("--skew", type=unit_float, default=0.8, help="entity-mix skew (conll)")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--format", choices=FORMATS, help="default: from the extension")
    split.set_defaults(func=_split)

    check = sub.add_parser("check", help="validate a file and print a summary (exit 2 on bad input)")
    check.add_argument("file", type=Path)
    check.add_argument("--format", choices=FORMATS, help="default: from the extension")
    check.add_argument("--bio", choices=("repair", "reject"), default="repair",
                       help="conll: fix I-X that does not continue an entity, or reject the file")
    check.set_defaults(func=_check)
