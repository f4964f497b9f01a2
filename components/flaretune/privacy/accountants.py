"""Privacy accountants for the Poisson-subsampled Gaussian mechanism, behind a registry of names.

An accountant only holds a history of ``(noise_multiplier, sample_rate, steps)``; the analysis is
Opacus's (``opacus.accountants.analysis``):

* ``"rdp"`` — Rényi DP of the sampled Gaussian mechanism (Mironov, 2017, arXiv:1702.07476; Mironov,
  Talwar & Zhang, 2019, arXiv:1908.10530), summed over the history and converted to (ε, δ) at the best
  order; the orders are Opacus's defaults.
* ``"prv"`` — numerical composition of privacy loss random variables (Gopi, Lee & Wutschitz, 2021,
  arXiv:2106.02848); tighter than RDP, and what Opacus returns is the upper bound of its estimate.

Both assume each step samples every record independently with probability ``sample_rate``
(Poisson sampling) — the sampling :mod:`flaretune.train.dp_sgd` uses. A step that releases a whole
site's update without sampling (the client-level filter) is ``sample_rate=1``.

The history is the ground truth: :meth:`Accountant.state_dict` is plain JSON, and a history saved by
one accountant loads into the other (only the analysis differs).
"""

import math
import warnings
from typing import Dict, List, Tuple, Type

from flaretune.errors import ConfigError

STATE_VERSION = 1
Entry = Tuple[float, float, int]


def check_step(noise_multiplier, sample_rate, steps) -> Entry:
    """The validated ``(z, q, steps)``; one-line ConfigError for anything the analysis cannot take."""
    if isinstance(noise_multiplier, bool) or not isinstance(noise_multiplier, (int, float)) or not (
            math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ConfigError(f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not 0 < sample_rate <= 1:
        raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an int >= 1, got {steps!r}")
    return float(noise_multiplier), float(sample_rate), int(steps)


def check_delta(delta) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    return float(delta)


class Accountant:
    """History of Gaussian-mechanism steps; subclasses turn it into ε at a given δ."""

    name = "base"

    def __init__(self):
        self.history: List[Entry] = []

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` steps; runs of equal ``(z, q)`` are merged, as Opacus does."""
        z, q, n = check_step(noise_multiplier, sample_rate, steps)
        if self.history and self.history[-1][:2] == (z, q):
            self.history[-1] = (z, q, self.history[-1][2] + n)
        else:
            self.history.append((z, q, n))

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.history)

    def get_epsilon(self, delta: float) -> float:
        """ε spent at ``delta`` over the whole history (0 for an empty one)."""
        delta = check_delta(delta)
        return self._epsilon(delta) if self.history else 0.0

    def _epsilon(self, delta: float) -> float:
        raise NotImplementedError

    def copy(self) -> "Accountant":
        other = type(self)()
        other.history = list(self.history)
        return other

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "mechanism": self.name, "history": [list(e) for e in self.history]}

    def load_state_dict(self, state: dict) -> None:
        """Replace the history with ``state["history"]`` (any mechanism's: the history is the same data)."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or not isinstance(
                state.get("history"), list):
            raise ConfigError(f"not a version-{STATE_VERSION} accountant state: {str(state)[:80]}")
        history = []
        for entry in state["history"]:
            if not isinstance(entry, (list, tuple)) or len(entry) != 3:
                raise ConfigError(f"accountant history entries are [noise_multiplier, sample_rate, steps], "
                                  f"got {entry!r}")
            history.append(check_step(*entry))
        self.history = history


class RDPAccountant(Accountant):
    """Rényi DP accounting (Mironov, 2017, arXiv:1702.07476) with Opacus's orders and conversion."""

    name = "rdp"

    def _epsilon(self, delta):
        from opacus.accountants import RDPAccountant as OpacusRDP
        from opacus.accountants.analysis import rdp

        orders = OpacusRDP.DEFAULT_ALPHAS
        total = sum(rdp.compute_rdp(q=q, noise_multiplier=z, steps=n, orders=orders) for z, q, n in self.history)
        eps, _ = rdp.get_privacy_spent(orders=orders, rdp=total, delta=delta)
        return float(eps)


class PRVAccountant(Accountant):
    """PRV accounting (Gopi et al., 2021, arXiv:2106.02848): Opacus's FFT composition, upper bound of ε."""

    name = "prv"
    eps_error = 0.01

    def _epsilon(self, delta):
        from opacus.accountants import PRVAccountant as OpacusPRV

        inner = OpacusPRV()
        inner.history = list(self.history)
        return float(inner.get_epsilon(delta=delta, eps_error=self.eps_error))


ACCOUNTANTS: Dict[str, Type[Accountant]] = {RDPAccountant.name: RDPAccountant, PRVAccountant.name: PRVAccountant}


def make_accountant(name: str = "rdp") -> Accountant:
    if name not in ACCOUNTANTS:
        raise ConfigError(f"Invalid accountant {name!r}; valid: {', '.join(ACCOUNTANTS)}")
    return ACCOUNTANTS[name]()


def epsilon_for(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                accountant: str = "rdp") -> float:
    """ε of ``steps`` steps at ``(z, q)`` and ``delta``."""
    acc = make_accountant(accountant)
    acc.step(noise_multiplier, sample_rate, steps)
    return acc.get_epsilon(delta)


def noise_for_epsilon(epsilon: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    """A noise multiplier whose ε after ``steps`` steps is ≤ ``epsilon`` and within 0.01 of it (budget planning).

    Opacus's ``get_noise_multiplier`` bisects on the multiplier with the named accountant.
    """
    from opacus.accountants.utils import get_noise_multiplier

    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not (0 < epsilon < math.inf):
        raise ConfigError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    check_step(1.0, sample_rate, steps)
    delta = check_delta(delta)
    make_accountant(accountant)
    try:
        with warnings.catch_warnings():  # the bisection's large trial sigmas hit the largest RDP order: harmless
            warnings.simplefilter("ignore", UserWarning)
            return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                              steps=steps, accountant=accountant))
    except ValueError as err:
        raise ConfigError(f"no noise multiplier reaches epsilon={epsilon} at delta={delta} "
                          f"for {steps} steps at sample_rate={sample_rate}: {err}") from None
