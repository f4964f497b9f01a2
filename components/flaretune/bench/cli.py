"""``flaretune bench ...``: benchmarks that print a table, write JSON rows and a plot.

Each benchmark module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

import importlib

_BENCHMARKS = {
    "quantize": ("flaretune.bench.quantize", "quantization filters vs NVFlare's ModelQuantizer vs a tensor copy"),
    "stream": ("flaretune.bench.stream", "ObjectStreamer model transfer vs FLARE's default tensor path (POC)"),
    "secagg": ("flaretune.bench.secagg", "secure aggregation vs plain FedAvg: bytes and wall time per round"),
    "train-step": ("flaretune.bench.train_step", "a bank's LoRA step with and without the shared prompt prefix"),
    "async": ("flaretune.bench.asyncfl", "synchronous FedAvg vs asynchronous FedBuff with the same straggler"),
    "methods": ("flaretune.bench.methods", "client methods side by side: upload, parameters, peak RSS, s/round, score"),
    "forward-only": ("flaretune.bench.forward_only", "backprop LoRA vs forward-only LoRA (FwdLLM): memory, time, score"),
    "qlora": ("flaretune.bench.qlora", "LoRA on the fp32 base vs QLoRA (nf4 + double quantization), both scenarios"),
    "overhead": ("flaretune.bench.overhead", "FLARE overhead per round: a round minus the sites' training and evaluation"),
    "gpu": ("flaretune.bench.gpu", "the one prepared GPU check: QLoRA on SmolLM2 and quantization on CUDA"),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark")
    bench_sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, (module_name, help_text) in _BENCHMARKS.items():
        sub = bench_sub.add_parser(name, help=help_text)
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # a benchmark not built yet must not break the other commands
            continue
        module.add_arguments(sub)
        sub.set_defaults(func=module.run)
