"""Which of the available sites train a round: a seeded draw, so a job (and a resumed one) is reproducible.

Pure numpy, no FLARE. NVFlare's and Flower's samplers shuffle with an unseeded RNG; here the draw comes from
the round loop's :class:`numpy.random.Generator` (seeded by the job's ``seed``, its state checkpointed after
every round), so a job resumed from a checkpoint draws exactly what an uninterrupted one would.

How many: ``sample_count`` sites if set, else ``ceil(sample_fraction * n)`` of the ``n`` available, and never
fewer than ``min_clients`` (nor more than ``n``). Client sampling as in FedAvg (McMahan et al., 2017,
arXiv:1602.05629: a fraction C of the clients per round).

Which: ``uniform`` draws without replacement with equal probabilities; ``weighted`` with probabilities
proportional to each site's data size, its last reported ``num_examples`` (an accepted result). A site not
seen yet (it joined, or has never had a result accepted) is given the mean size of the seen sites, so it is
neither favoured nor starved; before any site has been seen all weigh the same. Selecting every site draws
nothing from the RNG.
"""

import math
import numbers
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence

import numpy as np

from flaretune.errors import ConfigError

SAMPLING_MODES = ("uniform", "weighted")


@dataclass(frozen=True)
class ClientSampling:
    """How many sites train a round, and how they are drawn (see the module docstring)."""

    sample_fraction: float = 1.0
    """Share of the available sites per round, in (0, 1]; ignored when ``sample_count`` is set."""
    sample_count: Optional[int] = None
    """Sites per round (at most the available ones); None: use ``sample_fraction``."""
    sampling: str = "uniform"
    """``uniform`` or ``weighted`` (by each site's last reported example count)."""
    min_clients: int = 0
    """A round never selects fewer sites than this (when that many are available)."""

    def __post_init__(self):
        fraction = self.sample_fraction
        if not _real(fraction) or not math.isfinite(fraction) or not 0 < fraction <= 1:
            raise ConfigError(f"sample_fraction must be a number in (0, 1], got {fraction!r}")
        count = self.sample_count
        if count is not None and (not _integer(count) or count < 1):
            raise ConfigError(f"sample_count must be an integer >= 1 (or null for sample_fraction), got {count!r}")
        if self.sampling not in SAMPLING_MODES:
            raise ConfigError(f"Invalid sampling {self.sampling!r}; valid: {', '.join(SAMPLING_MODES)}")
        if not _integer(self.min_clients) or self.min_clients < 0:
            raise ConfigError(f"min_clients must be an integer >= 0, got {self.min_clients!r}")

    @property
    def everyone(self) -> bool:
        return self.sample_count is None and self.sample_fraction == 1

    def how_many(self, n: int) -> int:
        wanted = self.sample_count if self.sample_count is not None else math.ceil(self.sample_fraction * n)
        return min(n, max(wanted, self.min_clients, 1)) if n else 0

    def select(self, clients: Sequence[str], rng: np.random.Generator,
               num_examples: Optional[Mapping[str, float]] = None) -> List[str]:
        """The sites that train, in the order of ``clients``; draws from ``rng`` only when it leaves some out."""
        clients = list(clients)
        k = self.how_many(len(clients))
        if k == len(clients):
            return clients
        p = site_probabilities(clients, num_examples or {}) if self.sampling == "weighted" else None
        chosen = set(rng.choice(len(clients), size=k, replace=False, p=p).tolist())
        return [site for i, site in enumerate(clients) if i in chosen]


def site_probabilities(clients: Sequence[str], num_examples: Mapping[str, float]) -> np.ndarray:
    """Each site's probability ∝ its last reported example count; unseen sites get the seen sites' mean."""
    seen = [float(num_examples[s]) for s in clients if s in num_examples]
    fill = float(np.mean(seen)) if seen else 1.0
    sizes = np.array([float(num_examples.get(s, fill)) for s in clients], dtype=np.float64)
    return sizes / sizes.sum()


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
