"""``flaretune compare``: federated vs centralized vs local-only (vs zero-shot) on the same data and budget.

Every argument is checked before anything starts: a mistake is one line and exit status 2.
"""

import argparse
from pathlib import Path

from flaretune.cliargs import positive_float, positive_int, unit_float


def check_arguments(args) -> None:
    """The checks argparse cannot do alone: names against the registries, files, the job folder."""
    from flaretune.aggregation.strategy import strategy_names
    from flaretune.compare.scenarios import scenario_for, style_names
    from flaretune.errors import ConfigError
    from flaretune.jobcfg import JobFolder
    from flaretune.models.base import validate_model_name

    job = JobFolder(args.job_dir)  # a missing or broken job folder is one line
    scenario = scenario_for(job)
    if args.quantize is not None and args.quantize != "none":
        from flaretune.ops.quant import validate_qtype

        validate_qtype(args.quantize, owner="--quantize")
    for name in ([args.aggregator] if args.aggregator else []) + list(args.aggregators or []):
        if name not in strategy_names():
            raise ConfigError(f"Invalid aggregator {name!r}; valid: {', '.join(strategy_names())}")
    if args.aggregator and args.aggregators:
        raise ConfigError("give --aggregator (one comparison) or --aggregators (the table), not both")
    if args.model:
        validate_model_name(args.model)
    if args.method:
        from flaretune.train.methods import validate_method

        validate_method(args.method, owner="--method")
    if args.method == "layer_skip" and not args.layers:
        raise ConfigError("--method layer_skip needs --layers: an index list like 0,2, top2 or every_other")
    if args.style and args.style not in style_names(scenario.name):
        raise ConfigError(f"--style {args.style!r} is not a {scenario.name} style; valid: "
                          f"{', '.join(style_names(scenario.name))}")
    if bool(args.train) != bool(args.test):
        raise ConfigError("give both --train and --test, or neither (synthetic sites)")
    for flag, path in (("--train", args.train), ("--test", args.test)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{flag} {path}: no such file")


def _aggregator_list(text: str):
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of aggregators")
    return names


def _run(args) -> int:
    from flaretune.compare.report import summary_lines
    from flaretune.compare.run import Options, compare

    check_arguments(args)
    if args.aggregators:
        from flaretune.compare.aggregators import compare_aggregators, table_lines

        options = Options(args.sites, args.rounds, args.seed, args.skew, args.alpha, args.train, args.test,
                          args.quantize, args.model, args.style, args.dp_epsilon,
                          secure_aggregation=args.secure_aggregation, method=args.method, layers=args.layers,
                          learning_rate=args.lr)
        table = compare_aggregators(args.job_dir, args.out, args.aggregators, options)
        print("\n".join(table_lines(table)))
        print(f"wrote {args.out}/aggregators.json and {args.out}/aggregators.png")
        return 0
    report = compare(
        args.job_dir, args.out, sites=args.sites, rounds=args.rounds, seed=args.seed, skew=args.skew,
        train_file=args.train, test_file=args.test, quantize=args.quantize, model=args.model,
        style=args.style, dp_epsilon=args.dp_epsilon, alpha=args.alpha, aggregator=args.aggregator,
        server_lr=args.server_lr, secure_aggregation=args.secure_aggregation, method=args.method,
        layers=args.layers, learning_rate=args.lr,
    )
    print("\n".join(summary_lines(report)))
    print(f"wrote {args.out}/report.json and {args.out}/report.png")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="federated vs centralized vs local-only on the same data")
    parser.add_argument("job_dir", help="job folder: jobs/clinical_ner or jobs/fin_instruct (or a copy)")
    parser.add_argument("--out", required=True, help="output folder (report.json, report.png, logs, workspace)")
    parser.add_argument("--train", help="your training file, split across the sites non-IID: CoNLL for NER; "
                        "Financial PhraseBank (sentence@label) or instruction JSONL for fin_instruct")
    parser.add_argument("--test", help="your test file (the shared test set), same formats")
    parser.add_argument("--sites", type=positive_int, default=3, help="number of sites (default 3)")
    parser.add_argument("--rounds", type=positive_int, help="federated rounds (default: the job's num_rounds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skew", type=unit_float, default=0.8,
                        help="NER: non-IID strength of the entity-mix split in [0, 1] (default 0.8)")
    parser.add_argument("--alpha", type=positive_float, default=0.5,
                        help="fin_instruct: Dirichlet alpha over labels for the bank split; smaller = more skew")
    parser.add_argument("--aggregator", help="server strategy for this comparison (default: the job's)")
    parser.add_argument("--server-lr", type=positive_float, help="server learning rate (FedOpt family)")
    parser.add_argument("--aggregators", type=_aggregator_list,
                        help="comma-separated strategies to tabulate (aggregators.json, aggregators.png), e.g. "
                        "fedavg,fedprox,fedavgm,fedadagrad,fedadam,fedyogi")
    parser.add_argument("--quantize", help="quantize both directions: none, float16, bfloat16, blockwise8, nf4, fp4, entropy "
                        "(default: as the job folder says)")
    parser.add_argument("--style", help="synthetic data: clinical_ner notes (default) | templates; "
                        "fin_instruct messages (default, realistic) | templates")
    parser.add_argument("--dp-epsilon", type=positive_float,
                        help="federated sites train with DP-SGD at this epsilon (delta 1e-5) over the whole job")
    parser.add_argument("--secure-aggregation", action="store_true",
                        help="the federated run masks every update (pairwise masks, Shamir dropout recovery): the "
                        "server sees only the sum")
    parser.add_argument("--method", help="client method at every site (flaretune.train.methods): lora (default), "
                        "full, layer_skip, ffa_lora, ...")
    parser.add_argument("--layers", help="layers that train (layer_skip; lora/full/ffa_lora: only these): "
                        "an index list like 0,2, top2 or every_other")
    parser.add_argument("--lr", type=positive_float, help="learning rate of every setting (default: the job's; "
                        "full weights usually want far less than LoRA's)")
    parser.add_argument("--model", help="override the base model (e.g. tiny-minilm-ner / tiny-smollm2 for a quick check)")
    parser.set_defaults(func=_run)
