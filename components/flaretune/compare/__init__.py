"""``flaretune compare``: federated vs centralized vs local-only on the same data and epochs."""


def _run(args) -> int:
    from flaretune.compare.report import summary_lines
    from flaretune.compare.run import compare

    report = compare(
        args.job_dir, args.out, sites=args.sites, rounds=args.rounds, seed=args.seed, skew=args.skew,
        train_file=args.train, test_file=args.test, quantize=args.quantize, model=args.model,
        style=args.style, dp_epsilon=args.dp_epsilon,
    )
    print("\n".join(summary_lines(report)))
    print(f"wrote {args.out}/report.json and {args.out}/report.png")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="federated vs centralized vs local-only on the same data")
    parser.add_argument("job_dir", help="job folder, e.g. jobs/clinical_ner")
    parser.add_argument("--out", required=True, help="output folder (report.json, report.png, logs, workspace)")
    parser.add_argument("--train", help="your CoNLL training file (split across the sites, non-IID)")
    parser.add_argument("--test", help="your CoNLL test file (shared test set)")
    parser.add_argument("--sites", type=int, default=3, help="number of sites (default 3)")
    parser.add_argument("--rounds", type=int, help="federated rounds (default: the job's num_rounds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skew", type=float, default=0.8, help="non-IID strength in [0, 1] (default 0.8)")
    parser.add_argument("--quantize", help="quantize both directions: none, float16, bfloat16, blockwise8, nf4, fp4 "
                        "(default: as the job folder says)")
    parser.add_argument("--style", default="notes", choices=["notes", "templates"],
                        help="synthetic hospitals: realistic telegraphic notes (default) or the easy templates")
    parser.add_argument("--dp-epsilon", type=float,
                        help="federated sites train with DP-SGD at this epsilon (delta 1e-5) over the whole job")
    parser.add_argument("--model", help="override the base model (e.g. tiny-minilm-ner for a quick check)")
    parser.set_defaults(func=_run)
