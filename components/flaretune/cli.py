"""The ``flaretune`` command.

Each area registers its own sub-commands; modules are imported only when the command needs them,
so ``flaretune data check`` does not pay for torch.
"""

import argparse
import importlib
import os
import signal
import sys
import threading
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
    "poc": "flaretune.poc_cli",
    "predict": "flaretune.predict",
}


class Parser(argparse.ArgumentParser):
    """A command-line mistake is one line (which command, which argument, what was expected) and exit 2;
    sub-command parsers are of this class too (argparse makes them of their parent's class)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="flaretune", description="Federated fine-tuning of language models on NVIDIA FLARE.")
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


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a scheduler's time limit, a closed terminal), raised like Ctrl-C's KeyboardInterrupt so
    that every ``finally`` that ends FLARE processes (simulator, POC network) runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _on_stop_signal(signum, frame):
    # the first signal unwinds the command; later ones must not cut its clean-up short (that would orphan the
    # FLARE processes it started), so they only say what is happening
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _still_stopping)
    raise Terminated(signum)


def _still_stopping(signum, frame):
    print(f"flaretune: {signal.Signals(signum).name} received; still stopping the FLARE processes it started",
          file=sys.stderr, flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in _STOP_SIGNALS} if main_thread else {}
    try:
        return int(args.func(args) or 0)
    except FlaretuneError as err:
        # DataFormatError already reads "path:line: what is wrong"
        print(str(err) if isinstance(err, DataFormatError) else f"flaretune: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`flaretune data check … | head`): stop quietly, as a Unix tool does; stdout
        # goes to /dev/null so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Terminated) else signal.SIGINT
        print(f"flaretune: stopped by {signal.Signals(signum).name}; the FLARE processes it started are ended",
              file=sys.stderr)
        return 128 + signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
