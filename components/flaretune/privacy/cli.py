"""``flaretune privacy epsilon|noise``: ε of a planned run, or the noise multiplier that reaches a target ε.

Both assume Poisson sampling at ``--sample-rate`` per step (what ``train_step: "dpsgd"`` does); a
client-level filter releasing one update per round is ``--sample-rate 1 --steps ROUNDS``. Each prints
one number on stdout, so scripts can read it; bad values are one-line errors (exit code 2).
"""

from flaretune.cliargs import positive_int
from flaretune.privacy.accountants import ACCOUNTANTS, epsilon_for, noise_for_epsilon


def _epsilon(args) -> int:
    print(f"{epsilon_for(args.noise_multiplier, args.sample_rate, args.steps, args.delta, args.accountant):.6g}")
    return 0


def _noise(args) -> int:
    print(f"{noise_for_epsilon(args.epsilon, args.sample_rate, args.steps, args.delta, args.accountant):.6g}")
    return 0


def register(subparsers) -> None:
    privacy = subparsers.add_parser("privacy", help="differential-privacy planning: epsilon and noise")
    sub = privacy.add_subparsers(dest="privacy_command", required=True)
    eps = sub.add_parser("epsilon", help="print the epsilon of STEPS steps at a noise multiplier and sample rate")
    eps.add_argument("--noise-multiplier", type=float, required=True, help="z: noise std / clipping bound")
    eps.set_defaults(func=_epsilon)
    noise = sub.add_parser("noise", help="print the noise multiplier that reaches EPSILON after STEPS steps")
    noise.add_argument("--epsilon", type=float, required=True, help="target epsilon")
    noise.set_defaults(func=_noise)
    for cmd in (eps, noise):
        cmd.add_argument("--sample-rate", type=float, required=True, help="q: probability a record is in a step")
        cmd.add_argument("--steps", type=positive_int, required=True, help="number of steps (all rounds together)")
        cmd.add_argument("--delta", type=float, required=True, help="target delta, e.g. 1e-5")
        cmd.add_argument("--accountant", choices=tuple(ACCOUNTANTS), default="rdp", help="analysis (default rdp)")
