"""``python jobs/<job>/job.py``: run a job's recipe in FLARE's simulator, a POC network or a provisioned network,
or write its job folder.

    --env sim                          SimEnv: the FLARE simulator, --sites sites, in --workspace
    --env poc                          PocEnv: a fresh POC network on this machine (FLARE's POC workspace)
    --env poc|prod --startup-kit KIT   ProdEnv: submit with an admin's startup kit (a running POC or a real network)
    --export DIR                       write the job folder (meta.json, app/config/*.json) to DIR

Each job's own options (``--rounds``, ``--model``, ...) replace one field of the recipe's dataclass arguments;
what is not given keeps the job folder's value. A user's mistake is one line and exit 2.
"""

import argparse
import importlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

from flaretune.cliargs import positive_int
from flaretune.errors import ConfigError, FlaretuneError

ENVS = ("sim", "poc", "prod")
SIM_ROOT = "/tmp/nvflare/simulation"  # SimEnv's default workspace_root

# option -> (recipe argument, dataclass field or None for the argument itself), type, help
_PEFT = {
    "--rounds": (("rounds", "num_rounds"), positive_int, "rounds in all"),
    "--aggregator": (("rounds", "aggregator"), str, "fedavg, fedprox, fedavgm, fedadagrad, fedadam or fedyogi"),
    "--model": (("adapter", "model_name"), str, "base model, e.g. tiny-minilm-ner / tiny-smollm2 for a smoke test"),
    "--max-steps": (("training", "max_steps"), int, "local steps per round (0: local epochs)"),
    "--data": (("training", "data_path"), str, "site data; '{site_name}' expands (default: synthetic sites)"),
    "--quantize": (("quantization", None), str, "float16, bfloat16, blockwise8, nf4, fp4, entropy or none"),
}
FEDBUFF_JOBS = ("clinical_ner", "fin_instruct")
OPTIONS = {
    "clinical_ner": _PEFT,
    "fin_instruct": _PEFT,
    "model_push": {
        "--model-dir": (("push", "model_dir"), str, "folder to push (relative: under the server's workspace)"),
        "--model-name": (("push", "model_name"), str, "the sites keep it as models/<name>"),
    },
    "streamed_fedavg": {
        "--model-dir": (("rounds", "model_dir"), str, "initial model folder (relative: under the server's workspace)"),
        "--rounds": (("rounds", "num_rounds"), positive_int, "rounds in all"),
    },
    "split_ner": {
        "--rounds": (("rounds", "num_rounds"), positive_int, "rounds in all"),
        "--model": (("adapter", "model_name"), str, "base model, e.g. tiny-minilm-ner for a smoke test"),
        "--max-steps": (("training", "max_steps"), int, "batches per round (0: one epoch)"),
        "--data": (("training", "data_path"), str, "site data; '{site_name}' expands (default: synthetic sites)"),
        "--sigma": (("rounds", "sigma"), float, "noise on the activations the sites send"),
    },
}


def build_parser(job: str) -> argparse.ArgumentParser:
    from flaretune.cli import Parser

    parser = Parser(prog=f"jobs/{job}/job.py", description=f"Run {job} as a FLARE recipe, or write its job folder.")
    parser.add_argument("--env", choices=ENVS, default="sim", help="where it runs (default sim)")
    parser.add_argument("--startup-kit", help="an admin's startup kit folder (--env prod; --env poc: a running POC)")
    parser.add_argument("--sites", type=positive_int, help="number of sites (default: the job's min_clients)")
    parser.add_argument("--workspace", default=SIM_ROOT, help=f"--env sim: workspace root (default {SIM_ROOT})")
    parser.add_argument("--threads", type=positive_int, help="--env sim: simulator threads (default: one a site)")
    parser.add_argument("--export", metavar="DIR", help="write the job folder to DIR instead of running it")
    for flag, (_, kind, text) in OPTIONS[job].items():
        parser.add_argument(flag, type=kind, help=text)
    if job in FEDBUFF_JOBS:
        parser.add_argument("--fedbuff", type=positive_int, metavar="K",
                            help="asynchronous FedBuff, K results per server update; --rounds then counts updates")
    return parser


def make_recipe(job: str, args: argparse.Namespace):
    """The job's recipe with each given option replacing its field."""
    from flaretune.recipes import recipe_class

    cls = recipe_class(job)
    defaults, kwargs = cls.defaults(), {}
    for flag, ((param, name), _, _) in OPTIONS[job].items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        kwargs[param] = value if name is None else replace(kwargs.get(param, defaults[param]), **{name: value})
    if getattr(args, "fedbuff", None):
        from flaretune.recipes.args import Buffered

        rounds = kwargs.get("rounds", defaults["rounds"])
        kwargs["rounds"] = Buffered(num_updates=rounds.num_rounds, buffer_size=args.fedbuff,
                                    aggregator=rounds.aggregator, persistor_id=rounds.persistor_id)
    if args.sites is not None:
        kwargs["min_clients"] = args.sites
    return cls(**kwargs)


def admin_kit(path: str) -> tuple:
    """``(kit folder, user name)`` of an admin's startup kit, or one line saying what is wrong."""
    kit = Path(path)
    fed_admin = kit / "startup" / "fed_admin.json"
    if not fed_admin.is_file():
        raise ConfigError(f"--startup-kit {path}: not an admin startup kit (no startup/fed_admin.json); give the "
                          f"folder provisioning wrote for an admin, e.g. .../prod_00/admin@nvidia.com")
    try:
        user = json.loads(fed_admin.read_text())["admin"].get("username") or kit.resolve().name
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(f"{fed_admin}: not a FLARE admin configuration (no 'admin' object)") from None
    return str(kit.resolve()), user


def make_env(args: argparse.Namespace, recipe):
    from nvflare.recipe import PocEnv, ProdEnv, SimEnv

    sites = args.sites or recipe.min_clients
    if args.startup_kit:
        if args.env == "sim":
            raise ConfigError("--startup-kit is for --env prod or poc (the simulator needs none)")
        kit, user = admin_kit(args.startup_kit)
        return ProdEnv(startup_kit_location=kit, username=user)
    if args.env == "prod":
        raise ConfigError("--env prod needs --startup-kit KIT: the admin's startup kit of the network")
    if args.env == "poc":
        return PocEnv(num_clients=sites)
    return SimEnv(num_clients=sites, num_threads=args.threads, workspace_root=str(Path(args.workspace).resolve()))


def _hide_argv_from_flare() -> None:
    """FLARE's recipe module takes ``--export``/``--export-dir`` out of ``sys.argv`` when first imported (for
    ``recipe.execute``); ours are parsed already, so it sees none of them."""
    if "nvflare.recipe.spec" in sys.modules:
        return
    saved, sys.argv[1:] = sys.argv[1:], []
    try:
        importlib.import_module("nvflare.recipe.spec")
    finally:
        sys.argv[1:] = saved


def run(recipe, env) -> int:
    from nvflare.recipe import SimEnv

    from flaretune.recipes.base import say

    try:
        job = recipe.run(env)
    except RuntimeError as err:  # FLARE: the simulation failed, or the job could not be submitted
        print(f"{recipe.name}: {err}", file=sys.stderr)
        return 1
    if isinstance(env, SimEnv):
        workspace = Path(env.workspace_root) / recipe.name
        say(f"{recipe.name} ran in the simulator; the server's run folder is {workspace / 'server' / 'simulate_job'}")
        return 0
    say(f"submitted {recipe.name} as job {job.get_job_id()}; waiting for it to finish")
    try:
        result = job.get_result(clean_up=False)  # a POC keeps its workspace (and the downloaded result)
    except KeyboardInterrupt:
        env.stop(clean_up=False)  # ends a POC network PocEnv started; a production job goes on at the server
        say(f"interrupted; job {job.get_job_id()} was not waited for")
        return 130
    status = job.get_status()
    say(f"job {job.get_job_id()}: {status}; result in {result}")
    return 0 if result and "COMPLETED" in str(status) else 1


def main(job: str, argv: Optional[List[str]] = None) -> int:
    parser = build_parser(job)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        _hide_argv_from_flare()
        recipe = make_recipe(job, args)
        if args.export:
            out = recipe.export_folder(args.export)
            print(f"wrote the {recipe.name} job folder to {out} (meta.json, app/config/*.json)")
            return 0
        env = make_env(args, recipe)
        return run(recipe, env)
    except FlaretuneError as err:
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return 2
