"""The ``flaretune`` command.

Each area registers its own sub-commands; modules are imported only when the command needs them,
so ``flaretune data check`` does not pay for torch.
"""

import argparse
import importlib
import sys
from typing import List, Optional

from flaretune.errors import DataFormatError, FlaretuneError

# sub-command name -> module exposing ``register(subparsers)``; each parser sets ``func``.
_COMMANDS = {
    "data": "flaretune.data.cli",
    "compare": "flaretune.compare",
    "export": "flaretune.export",
    "bench": "flaretune.bench.cli",
    "site-policy": "flaretune.provisioning.cli",
    "privacy": "flaretune.privacy.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flaretune", description="Federated fine-tuning of language models on NVIDIA FLARE."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in _COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:  # a real missing dependency is a bug: let it show
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FlaretuneError as err:
        # DataFormatError already reads "path:line: what is wrong"
        print(str(err) if isinstance(err, DataFormatError) else f"flaretune: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flaretune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
