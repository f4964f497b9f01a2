"""The server's strategy: which sites train, what they are told, what is accepted, how it is combined.

Pure numpy — no FLARE, no torch — so every controller (in memory or over folders of shards) drives the
same object and the math is tested on its own. The family follows Flower's: one aggregation path in
:class:`Strategy` (validated results → example-weighted mean → :meth:`Strategy.server_update`), and
each variant overrides only what differs.

* FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from Decentralized
  Data", arXiv:1602.05629): the new global model is the example-weighted mean of the client models.
* FedProx (Li et al., 2020, "Federated Optimization in Heterogeneous Networks", arXiv:1812.06127):
  FedAvg's server step; the proximal weight ``mu`` travels to the sites in the task meta.
* FedOpt (Reddi et al., 2021, "Adaptive Federated Optimization", arXiv:2003.00295): the weighted mean
  defines a pseudo-gradient ``g = x - mean`` to which a server optimiser is applied — momentum
  (FedAvgM, Hsu et al., 2019, arXiv:1909.06335), Adagrad, Adam or Yogi.

A strategy's state (step count and optimiser moments) is :meth:`Strategy.state_dict`, so a resumed job
takes the same next step as one that never stopped; :func:`flatten_state` splits it into JSON and
arrays for safetensors.
"""

import inspect
import math
import numbers
from abc import ABC, abstractmethod
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Type

import numpy as np

from flaretune.aggregation.sampling import ClientSampling
from flaretune.aggregation.state import ARRAY_REF, flatten_state, unflatten_state  # noqa: F401 (re-exported)
from flaretune.aggregation.validation import ValidationPolicy, check_result, norm_outliers
from flaretune.errors import ConfigError
from flaretune.keys import FEDPROX_MU

Params = Dict[str, np.ndarray]


def weighted_mean(updates: Sequence[Tuple[Params, float]]) -> Dict[str, np.ndarray]:
    """``sum_k (n_k / n) x_k`` in float64, for tensor dicts with identical names and shapes."""
    if not updates:
        raise ValueError("no client updates to aggregate")
    total = float(sum(weight for _, weight in updates))
    if not total > 0:
        raise ValueError(f"aggregation weights must sum to a positive number, got {total}")
    names = set(updates[0][0])
    result: Dict[str, np.ndarray] = {}
    for params, weight in updates:
        if set(params) != names:
            raise ValueError(f"client updates disagree on tensor names: {sorted(names ^ set(params))[:3]}")
        for name, value in params.items():
            contribution = np.asarray(value, dtype=np.float64) * (weight / total)
            result[name] = result[name] + contribution if name in result else contribution
    return result


def _check(name: str, value, ok: Callable[[float], bool], expected: str) -> None:
    """Constructor check: a finite real number (not a bool) for which ``ok`` holds, else a one-line error."""
    real = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not (real and math.isfinite(value) and ok(value)):
        raise ConfigError(f"{name} must be {expected}, got {value!r}")


class Strategy(ABC):
    """One aggregation path; subclasses change the round's meta or the server update only."""

    name = ""

    def __init__(self, policy: Optional[ValidationPolicy] = None):
        self.policy = policy or ValidationPolicy()
        self.step = 0  # completed aggregations
        self.sampling = ClientSampling()  # every site; a controller sets its job's (see make_strategy)
        self.num_examples: Dict[str, float] = {}  # each site's last accepted example count (weighted sampling)

    def configure_round(
        self, round_number: int, clients: Sequence[str], rng: np.random.Generator
    ) -> Tuple[List[str], dict]:
        """The sites that train this round (drawn by :attr:`sampling` from ``rng``, in the order given), and the
        task meta they receive."""
        return self.sampling.select(clients, rng, self.num_examples), {}

    def observe(self, num_examples: Mapping[str, Optional[float]]) -> None:
        """Remember the example counts of the results just accepted (``weighted`` sampling draws by them).

        A result without a count (secure aggregation drops it: the server learns only the sum) leaves its
        site's last known count, or none, so ``weighted`` sampling treats it as a site not seen yet."""
        self.num_examples.update({site: float(n) for site, n in num_examples.items() if n is not None})

    def validate(self, global_params: Params, params: Params, num_examples) -> Optional[str]:
        """A one-line reason to reject one result, or None (see :mod:`~flaretune.aggregation.validation`)."""
        return check_result(global_params, params, num_examples, self.policy)

    def validate_round(self, global_params: Params, results: Mapping[str, Tuple[Params, float]]) -> Dict[str, str]:
        """{site: reason} for results that only the whole round shows to be wrong (norm outliers)."""
        return norm_outliers(global_params, results, self.policy.norm_outlier_factor)

    def aggregate(self, global_params: Params, updates: Sequence[Tuple[Params, float]]) -> Params:
        """New global parameters from ``(full client params, weight)`` pairs, in the global dtypes."""
        return list(self.aggregate_in_parts([(global_params, updates)]))[0]

    def aggregate_in_parts(self, parts: Iterable[Tuple[Params, Sequence[Tuple[Params, float]]]]) -> Iterator[Params]:
        """:meth:`aggregate` over a model in pieces (e.g. one tensor at a time from folders on disk).

        Each part is ``(global tensors, [(the same tensors of each client, weight)])``; every server update is
        per tensor, so the pieces give exactly what one call on the whole model gives, and the strategy counts
        one step once the last part is consumed.
        """
        for global_part, updates in parts:
            new_params = self.server_update(global_part, weighted_mean(updates))
            yield {name: value.astype(np.asarray(global_part[name]).dtype, copy=False)
                   for name, value in new_params.items()}
        self.step += 1

    @abstractmethod
    def server_update(self, global_params: Params, mean: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The new global model (float64) from the current one and the clients' weighted mean."""

    def config(self) -> dict:
        """The constructor arguments (the strategy's own parameters), as JSON."""
        return {arg: getattr(self, arg) for arg in accepted_kwargs(type(self))}

    def state_dict(self) -> dict:
        """JSON-able metadata plus numpy arrays (copies): everything the next step depends on."""
        return {"name": self.name, "step": self.step, "config": self.config(), "moments": {},
                "num_examples": dict(self.num_examples)}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`'s output. The constructor arguments stay those of this job."""
        if state.get("name") != self.name:
            raise ConfigError(
                f"the checkpoint's strategy state is for aggregator {state.get('name')!r}, this job runs "
                f"{self.name!r}; resume with the same aggregator or start without resume_from"
            )
        self.step = int(state["step"])
        self.num_examples = {site: float(n) for site, n in state.get("num_examples", {}).items()}


class FedAvg(Strategy):
    """FedAvg (McMahan et al., 2017, arXiv:1602.05629): the example-weighted mean is the new model."""

    name = "fedavg"

    def server_update(self, global_params, mean):
        return mean


class FedProx(FedAvg):
    """FedProx (Li et al., 2020, arXiv:1812.06127): each site adds ``mu/2 ||w - w_global||^2`` to its loss.

    Only the clients' objective changes, so the server step is FedAvg's; ``mu`` goes out in the task meta.
    """

    name = "fedprox"

    def __init__(self, mu: Optional[float] = None, policy: Optional[ValidationPolicy] = None):
        _check("mu", mu, lambda v: v > 0,
               "> 0 for aggregator 'fedprox' (the proximal weight, job argument fedprox_mu; e.g. 0.01)")
        super().__init__(policy)
        self.mu = mu

    def configure_round(self, round_number, clients, rng):
        selected, meta = super().configure_round(round_number, clients, rng)
        return selected, {**meta, FEDPROX_MU: self.mu}


class FedOpt(Strategy):
    """FedOpt (Reddi et al., 2021, arXiv:2003.00295, Alg. 1): the server treats ``g = x - mean`` as a gradient.

    ``x <- x - server_lr * direction(g)``; subclasses give the direction and keep its moments in
    ``self.moments[moment][tensor]`` (float64), which :meth:`state_dict` saves.
    """

    def __init__(self, server_lr: float = 1.0, policy: Optional[ValidationPolicy] = None):
        _check("server_lr", server_lr, lambda v: v > 0, "a number > 0")
        super().__init__(policy)
        self.server_lr = server_lr
        self.moments: Dict[str, Dict[str, np.ndarray]] = {}

    @abstractmethod
    def direction(self, name: str, gradient: np.ndarray) -> np.ndarray:
        """The step direction for tensor ``name`` given its pseudo-gradient; updates the moments."""

    def _moment(self, moment: str, name: str, like: np.ndarray) -> np.ndarray:
        return self.moments.get(moment, {}).get(name, np.zeros_like(like))

    def _set_moment(self, moment: str, name: str, value: np.ndarray) -> None:
        self.moments.setdefault(moment, {})[name] = value

    def server_update(self, global_params, mean):
        new_params = {}
        for name, x in global_params.items():
            x64 = np.asarray(x, dtype=np.float64)
            gradient = x64 - mean[name]  # pseudo-gradient: minus the mean client delta
            new_params[name] = x64 - self.server_lr * self.direction(name, gradient)
        return new_params

    def state_dict(self):
        state = super().state_dict()
        state["moments"] = {moment: {name: value.copy() for name, value in tensors.items()}
                            for moment, tensors in self.moments.items()}
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.moments = {moment: {name: np.array(value, dtype=np.float64) for name, value in tensors.items()}
                        for moment, tensors in state.get("moments", {}).items()}


class FedAvgM(FedOpt):
    """FedAvgM (Hsu et al., 2019, arXiv:1909.06335): server momentum ``m <- beta1 m + g``, step ``m``.

    It damps the oscillation that non-IID sites cause; with ``beta1 = 0`` and ``server_lr = 1`` it is FedAvg.
    """

    name = "fedavgm"

    def __init__(self, server_lr: float = 1.0, beta1: float = 0.9, policy: Optional[ValidationPolicy] = None):
        _check("beta1", beta1, lambda v: 0 <= v < 1, "in [0, 1)")
        super().__init__(server_lr, policy)
        self.beta1 = beta1

    def direction(self, name, gradient):
        m = self.beta1 * self._moment("m", name, gradient) + gradient  # heavy-ball momentum
        self._set_moment("m", name, m)
        return m


class AdaptiveFedOpt(FedOpt):
    """Reddi et al.'s Alg. 2: ``m <- beta1 m + (1 - beta1) g``, second moment ``v``, step ``m / (sqrt(v) + tau)``.

    Per-coordinate step sizes let rarely-updated coordinates move as fast as busy ones; ``tau`` bounds the
    step where ``v`` is tiny. Moments start at 0 (as Flower does), not at the paper's ``v_{-1} >= tau^2``.
    Subclasses give only the second moment.
    """

    def __init__(self, server_lr: float = 1.0, beta1: float = 0.9, tau: float = 1e-3,
                 policy: Optional[ValidationPolicy] = None):
        _check("beta1", beta1, lambda v: 0 <= v < 1, "in [0, 1)")
        _check("tau", tau, lambda v: v > 0, "a number > 0")
        super().__init__(server_lr, policy)
        self.beta1 = beta1
        self.tau = tau

    @abstractmethod
    def second_moment(self, v: np.ndarray, g2: np.ndarray) -> np.ndarray:
        """The new ``v`` from the old one and the squared pseudo-gradient."""

    def direction(self, name, gradient):
        # first moment: exponential moving average of the pseudo-gradient
        m = self.beta1 * self._moment("m", name, gradient) + (1 - self.beta1) * gradient
        # second moment: the variant's rule
        v = self.second_moment(self._moment("v", name, gradient), gradient * gradient)
        self._set_moment("m", name, m)
        self._set_moment("v", name, v)
        return m / (np.sqrt(v) + self.tau)


class FedAdagrad(AdaptiveFedOpt):
    """FedAdagrad (Reddi et al., 2021, arXiv:2003.00295): ``v <- v + g^2``, so steps shrink over rounds."""

    name = "fedadagrad"

    def second_moment(self, v, g2):
        return v + g2


class FedAdam(AdaptiveFedOpt):
    """FedAdam (Reddi et al., 2021, arXiv:2003.00295): ``v <- beta2 v + (1 - beta2) g^2``, a forgetting average."""

    name = "fedadam"

    def __init__(self, server_lr: float = 1.0, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3,
                 policy: Optional[ValidationPolicy] = None):
        _check("beta2", beta2, lambda v: 0 <= v < 1, "in [0, 1)")
        super().__init__(server_lr, beta1, tau, policy)
        self.beta2 = beta2

    def second_moment(self, v, g2):
        return self.beta2 * v + (1 - self.beta2) * g2


class FedYogi(FedAdam):
    """FedYogi (Reddi et al., 2021, arXiv:2003.00295; Yogi: Zaheer et al., 2018, NeurIPS): Adam's moments
    with an additive second-moment update ``v <- v - (1 - beta2) g^2 sign(v - g^2)``, so ``v`` cannot
    collapse after one large gradient the way Adam's forgetting average can.
    """

    name = "fedyogi"

    def second_moment(self, v, g2):
        return v - (1 - self.beta2) * g2 * np.sign(v - g2)


# ---- registry: job JSON names a strategy by string ----
_STRATEGIES: Dict[str, Type[Strategy]] = {}
# flat controller arguments kept for old job JSON -> the strategy parameter they mean
CONTROLLER_ALIASES = {"fedprox_mu": "mu"}


def register_strategy(name: str, cls: Type[Strategy]) -> None:
    """Make ``cls`` available as ``"aggregator": name``."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)) or inspect.isabstract(cls):
        raise TypeError(f"register_strategy({name!r}, ...) needs a concrete Strategy subclass, got {cls!r}")
    _STRATEGIES[name] = cls


def strategy_names() -> List[str]:
    return list(_STRATEGIES)


def accepted_kwargs(cls: Type[Strategy]) -> List[str]:
    """The strategy's own constructor parameters (``policy`` excepted), in signature order."""
    parameters = inspect.signature(cls.__init__).parameters
    return [p for p in parameters if p not in ("self", "policy")
            and parameters[p].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def _lookup(name: str) -> Type[Strategy]:
    if name not in _STRATEGIES:
        raise ConfigError(f"Invalid aggregator {name!r}; valid: {', '.join(_STRATEGIES)}")
    return _STRATEGIES[name]


def make_strategy(name: str, policy: Optional[ValidationPolicy] = None, sampling: Optional[ClientSampling] = None,
                  **kwargs) -> Strategy:
    """Build a registered strategy; unknown names and arguments fail with one line saying what is valid.
    ``sampling`` says which of the available sites each round selects (default: all)."""
    cls = _lookup(name)
    valid = accepted_kwargs(cls)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(
            f"aggregator {name!r} takes no argument {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(valid) or 'none'}"
        )
    strategy = cls(**kwargs, policy=policy)
    if sampling is not None:
        strategy.sampling = sampling
    return strategy


def strategy_kwargs(name: str, **candidates) -> dict:
    """From all of a controller's arguments, the ones strategy ``name`` takes (``fedprox_mu`` → ``mu``)."""
    valid = set(accepted_kwargs(_lookup(name)))
    renamed = {CONTROLLER_ALIASES.get(key, key): value for key, value in candidates.items()}
    return {key: value for key, value in renamed.items() if key in valid}


for _cls in (FedAvg, FedProx, FedAvgM, FedAdagrad, FedAdam, FedYogi):
    register_strategy(_cls.name, _cls)
