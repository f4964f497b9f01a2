"""FedBuff's math: staleness weights and one server update from a buffer of K results — no FLARE, no torch.

FedBuff (Nguyen et al., 2022, "Federated Learning with Buffered Asynchronous Aggregation", AISTATS,
arXiv:2106.06639) drops the round barrier: a site trains from whatever global model was current when it
was asked, the server buffers results as they come and, once it holds K of them, takes one server step.
A result trained from the model of server update ``v`` that arrives when the server is at update ``t``
has staleness ``s = t - v``; its change ``delta = x_site - x_v`` is scaled by a staleness weight (the
paper's ``1/sqrt(1 + s)``) before it is combined.

The step goes through the same :class:`~flaretune.aggregation.strategy.Strategy` as a synchronous round, so
FedAdam and the rest work asynchronously: each buffered result becomes the pseudo client model
``x_t + w(s) * delta`` and the strategy aggregates those, example-weighted, from ``x_t``. With FedAvg that is
``x_t + sum_i (n_i / n) w(s_i) delta_i`` (the paper weighs the K results equally and applies a server
learning rate; ``server_lr`` with ``fedavgm``/``fedadam`` gives that). Each result is validated against the
model it was trained from (names, shapes, dtypes, finite values, example count), and the buffer's norm
outliers are dropped as a round's are.
"""

import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from flaretune.errors import ConfigError

Params = Dict[str, np.ndarray]


def _constant(staleness: int, exponent: float) -> float:
    return 1.0


def _sqrt(staleness: int, exponent: float) -> float:
    return 1.0 / math.sqrt(1 + staleness)  # Nguyen et al.'s choice


def _poly(staleness: int, exponent: float) -> float:
    return float((1 + staleness) ** -exponent)  # Xie et al., 2019 (FedAsync, arXiv:1903.03934), polynomial


STALENESS = {"constant": _constant, "sqrt": _sqrt, "poly": _poly}


def staleness_weight(name: str, exponent: float = 0.5) -> Callable[[int], float]:
    """``w(s)`` for staleness ``s >= 0``: ``constant`` 1, ``sqrt`` ``1/sqrt(1+s)``, ``poly`` ``(1+s)^-exponent``."""
    if name not in STALENESS:
        raise ConfigError(f"Invalid staleness {name!r}; valid: {', '.join(STALENESS)}")
    real = isinstance(exponent, numbers.Real) and not isinstance(exponent, bool)
    if not (real and math.isfinite(exponent) and exponent >= 0):
        raise ConfigError(f"staleness_exponent must be a finite number >= 0, got {exponent!r}")
    rule = STALENESS[name]
    return lambda staleness: rule(staleness, exponent)


@dataclass
class Buffered:
    """One accepted result waiting in the buffer."""

    site: str
    params: Params  # the site's full parameters
    base: Params  # the global model it trained from
    num_examples: float
    trained_from: int  # server update count of ``base``
    metrics: dict = field(default_factory=dict)
    upload_bytes: object = None


def staleness_of(entry: Buffered, version: int) -> int:
    return version - entry.trained_from


def scaled_models(global_params: Params, entries: Sequence[Buffered], version: int,
                  weight: Callable[[int], float]) -> List[Tuple[Params, float, int, float]]:
    """``[(x_t + w(s) (x_site - x_base), n, s, w(s))]`` in float64, one per buffered result."""
    out = []
    for entry in entries:
        s = staleness_of(entry, version)
        factor = weight(s)
        model = {name: np.asarray(x, dtype=np.float64)
                 + factor * (np.asarray(entry.params[name], dtype=np.float64)
                             - np.asarray(entry.base[name], dtype=np.float64))
                 for name, x in global_params.items()}
        out.append((model, float(entry.num_examples), s, factor))
    return out


def apply_buffer(strategy, global_params: Params, entries: Sequence[Buffered], version: int,
                 weight: Callable[[int], float]) -> Tuple[Params, List[dict], Dict[str, str]]:
    """One server update from the buffer: ``(new global model, [record per used result], {key: reason})``.

    A record is ``{"site", "trained_from", "staleness", "weight", "num_examples", "metrics"}``; outliers are
    keyed ``site@trained_from``. With every result an outlier the model comes back unchanged and the
    strategy does not step.
    """
    scaled = scaled_models(global_params, entries, version, weight)
    keyed = {f"{e.site}@{e.trained_from}#{i}": (m[0], m[1]) for i, (e, m) in enumerate(zip(entries, scaled))}
    outliers = strategy.validate_round(global_params, keyed)
    used = [i for i, key in enumerate(keyed) if key not in outliers]
    rejected = {key.split("#")[0]: reason for key, reason in outliers.items()}
    if not used:
        return dict(global_params), [], rejected
    new_params = strategy.aggregate(global_params, [(scaled[i][0], scaled[i][1]) for i in used])
    records = [{"site": entries[i].site, "trained_from": entries[i].trained_from, "staleness": scaled[i][2],
                "weight": scaled[i][3], "num_examples": entries[i].num_examples, "metrics": entries[i].metrics,
                "upload_param_bytes": entries[i].upload_bytes} for i in used]
    return new_params, records, rejected
