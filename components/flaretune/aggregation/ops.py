"""Aggregation math on dicts of numpy arrays — no FLARE, no torch.

* FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from Decentralized
  Data"): the new global model is the example-weighted mean of the client models.
* FedOpt (Reddi et al., 2021, "Adaptive Federated Optimization"): treat the negative weighted mean of
  client deltas as a pseudo-gradient and apply a server optimiser (SGD with momentum, Adagrad, Adam,
  Yogi). With server_lr=1 and no momentum, FedAvgM reduces to FedAvg.
* FedProx (Li et al., 2020) changes only the client objective; the server step is FedAvg's.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np

from flaretune.errors import ConfigError

Params = Dict[str, np.ndarray]


def weighted_mean(updates: Sequence[Tuple[Params, float]]) -> Params:
    """Example-weighted mean of several tensor dicts with identical keys and shapes."""
    if not updates:
        raise ValueError("no client updates to aggregate")
    total = float(sum(weight for _, weight in updates))
    if total <= 0:
        raise ValueError(f"aggregation weights must sum to a positive number, got {total}")
    keys = set(updates[0][0])
    result: Params = {}
    for params, weight in updates:
        if set(params) != keys:
            raise ValueError(f"client updates disagree on tensor names: {sorted(keys ^ set(params))[:3]}")
        for name, value in params.items():
            contribution = np.asarray(value, dtype=np.float64) * (weight / total)
            result[name] = result[name] + contribution if name in result else contribution
    return result


class ServerOptimizer:
    """FedOpt server step: ``x <- x - lr * direction(pseudo_gradient)``; subclasses give the direction.

    ``pseudo_gradient = x_global - weighted_mean(x_client)`` (i.e. minus the mean client delta).
    """

    name = "fedavg"

    def __init__(self, server_lr: float = 1.0, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3):
        if server_lr <= 0:
            raise ConfigError(f"server_lr must be > 0, got {server_lr}")
        self.server_lr = server_lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.tau = tau
        self.step_count = 0
        self.state: Dict[str, Dict[str, np.ndarray]] = {}

    def _direction(self, name: str, gradient: np.ndarray) -> np.ndarray:
        return gradient

    def step(self, global_params: Params, mean_client_params: Params) -> Params:
        self.step_count += 1
        new_params: Params = {}
        for name, x in global_params.items():
            x64 = np.asarray(x, dtype=np.float64)
            gradient = x64 - np.asarray(mean_client_params[name], dtype=np.float64)
            updated = x64 - self.server_lr * self._direction(name, gradient)
            new_params[name] = updated.astype(np.asarray(x).dtype, copy=False)
        return new_params


class FedAvgM(ServerOptimizer):
    """Server momentum (Hsu et al., 2019): ``m <- beta1 m + g``."""

    name = "fedavgm"

    def _direction(self, name, gradient):
        m = self.state.setdefault(name, {}).get("m", np.zeros_like(gradient))
        m = self.beta1 * m + gradient
        self.state[name]["m"] = m
        return m


class _AdaptiveOptimizer(ServerOptimizer):
    """Shared Adam-family step (Reddi et al., 2021, Alg. 2): first moment, second moment v, lr·m/(sqrt(v)+tau)."""

    def _second_moment(self, v, g2):
        raise NotImplementedError

    def _direction(self, name, gradient):
        slot = self.state.setdefault(name, {})
        m = self.beta1 * slot.get("m", np.zeros_like(gradient)) + (1 - self.beta1) * gradient
        v = self._second_moment(slot.get("v", np.zeros_like(gradient)), gradient * gradient)
        slot["m"], slot["v"] = m, v
        return m / (np.sqrt(v) + self.tau)


class FedAdagrad(_AdaptiveOptimizer):
    name = "fedadagrad"

    def _second_moment(self, v, g2):
        return v + g2


class FedAdam(_AdaptiveOptimizer):
    name = "fedadam"

    def _second_moment(self, v, g2):
        return self.beta2 * v + (1 - self.beta2) * g2


class FedYogi(_AdaptiveOptimizer):
    name = "fedyogi"

    def _second_moment(self, v, g2):
        return v - (1 - self.beta2) * g2 * np.sign(v - g2)


# FedProx shares FedAvg's server step; its proximal term is added on the clients.
AGGREGATORS = {
    "fedavg": ServerOptimizer,
    "fedprox": ServerOptimizer,
    "fedavgm": FedAvgM,
    "fedadagrad": FedAdagrad,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
}


def make_server_optimizer(aggregator: str, **kwargs) -> ServerOptimizer:
    if aggregator not in AGGREGATORS:
        raise ConfigError(f"Invalid aggregator {aggregator!r}; valid: {', '.join(AGGREGATORS)}")
    return AGGREGATORS[aggregator](**kwargs)


def apply_diffs(global_params: Params, diffs: List[Tuple[Params, float]]) -> Params:
    """Turn WEIGHT_DIFF updates into the weighted mean of the implied client models."""
    mean_diff = weighted_mean(diffs)
    return {k: np.asarray(global_params[k], dtype=np.float64) + mean_diff[k] for k in global_params}
