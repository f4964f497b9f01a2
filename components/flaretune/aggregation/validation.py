"""Checks on every client result before it may reach the global model — no FLARE, no torch.

A result is a site's full parameters and its example count. Per result: the example count must be a
real, finite, positive number no larger than a cap (it is the aggregation weight, so a site must not
be able to buy a larger weight by claiming more data); the tensors must have exactly the global
model's names, shapes and dtypes; every value must be finite.

Across the round: an update whose norm ``||x_site - x_global||_2`` (over all tensors together) is more
than ``norm_outlier_factor`` times the round's median norm is rejected. The median is taken over every
result that passed the per-result checks, the candidate included, and only when there are at least
:data:`MIN_RESULTS_FOR_NORM` of them: with two results the median is their mean and either one can
hide behind the other. A median of 0 (every site sent the global model back) gives no scale, so the
check is skipped. The median, not the mean, because one huge update moves the mean but not the median
(the same reasoning as Blanchard et al., 2017, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent", NeurIPS, on why averaging alone tolerates no bad client).

:func:`aggregate_round` runs the per-result checks, then the round-level check on the survivors, then
the strategy's aggregation over the accepted results weighted by their example counts. The controller
owns ``min_clients``: it compares it with the accepted list this returns.
"""

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Tuple

import numpy as np

from flaretune.errors import ConfigError

if TYPE_CHECKING:  # strategy.py imports this module
    from flaretune.aggregation.strategy import Params, Strategy

MIN_RESULTS_FOR_NORM = 3
_SHOWN = 3  # tensor names listed in a reason before "and N more"


@dataclass(frozen=True)
class ValidationPolicy:
    """What the server accepts from a site. Passed to a :class:`Strategy` as ``policy=``."""

    max_num_examples: float = 1_000_000
    """Largest example count a result may claim; above it the result is rejected, not clipped."""
    norm_outlier_factor: float = 10.0
    """Reject an update whose norm exceeds this multiple of the round's median norm; 0 disables."""

    def __post_init__(self):
        if not _is_number(self.max_num_examples) or not self.max_num_examples > 0:
            raise ConfigError(f"max_num_examples must be a number > 0, got {self.max_num_examples!r}")
        factor = self.norm_outlier_factor
        if not _is_number(factor) or not math.isfinite(factor) or factor < 0 or 0 < factor <= 1:
            raise ConfigError(
                f"norm_outlier_factor must be 0 (off) or a finite number > 1, got {factor!r} "
                "(at most 1 would reject honest sites whose update is merely above the median)"
            )


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _names(names) -> str:
    names = sorted(names)
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def check_num_examples(num_examples, max_num_examples: float) -> Optional[str]:
    """None if ``num_examples`` may weight a result, else a one-line reason."""
    if num_examples is None:
        return "example count missing"
    if not _is_number(num_examples):
        return f"example count must be a number, got {type(num_examples).__name__} {num_examples!r}"
    value = float(num_examples)
    if not math.isfinite(value):
        return f"example count must be finite, got {value}"
    if value <= 0:
        return f"example count must be positive, got {num_examples}"
    if value > max_num_examples:
        return f"example count {num_examples} is above the cap max_num_examples={max_num_examples}"
    return None


def check_params(global_params: "Params", params) -> Optional[str]:
    """None if ``params`` has the global model's tensor names, shapes and dtypes and only finite values."""
    if not isinstance(params, Mapping):
        return f"parameters must be a dict of arrays, got {type(params).__name__}"
    missing = set(global_params) - set(params)
    if missing:
        return f"missing tensors: {_names(missing)}"
    unexpected = set(params) - set(global_params)
    if unexpected:
        return f"unexpected tensors: {_names(unexpected)}"
    for name in sorted(global_params):
        value, reference = params[name], np.asarray(global_params[name])
        if not isinstance(value, np.ndarray):
            return f"tensor {name!r} is a {type(value).__name__}, not a numpy array"
        if value.shape != reference.shape:
            return f"tensor {name!r} has shape {value.shape}, the global model's is {reference.shape}"
        if value.dtype != reference.dtype:
            return f"tensor {name!r} has dtype {value.dtype}, the global model's is {reference.dtype}"
        if not np.isfinite(value).all():
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            return f"tensor {name!r} has {bad} non-finite value(s) (NaN or Inf)"
    return None


def check_result(global_params: "Params", params, num_examples, policy: ValidationPolicy) -> Optional[str]:
    """The per-result checks: example count first (cheap), then the tensors."""
    return check_num_examples(num_examples, policy.max_num_examples) or check_params(global_params, params)


def update_norm(global_params: "Params", params: "Params") -> float:
    """``||x_site - x_global||_2`` over all tensors together, in float64."""
    total = 0.0
    for name, reference in global_params.items():
        delta = np.asarray(params[name], dtype=np.float64) - np.asarray(reference, dtype=np.float64)
        total += float(np.dot(delta.ravel(), delta.ravel()))
    return math.sqrt(total)


def norm_outliers(global_params: "Params", results: Mapping[str, Tuple["Params", float]], factor: float) -> Dict[str, str]:
    """{site: reason} for each result whose update norm exceeds ``factor`` × the round's median norm.

    ``results`` must already have passed :func:`check_result`. See the module docstring for the rule.
    """
    if factor == 0 or len(results) < MIN_RESULTS_FOR_NORM:
        return {}
    return outliers_by_norm({site: update_norm(global_params, params) for site, (params, _) in results.items()}, factor)


def outliers_by_norm(norms: Mapping[str, float], factor: float) -> Dict[str, str]:
    """The rule of :func:`norm_outliers` on update norms already computed (e.g. tensor by tensor from disk)."""
    if factor == 0 or len(norms) < MIN_RESULTS_FOR_NORM:
        return {}
    median = float(np.median(list(norms.values())))
    if median == 0:
        return {}
    return {
        site: f"update norm {norm:.6g} is more than {factor:g} x the round's median norm {median:.6g}"
        for site, norm in sorted(norms.items())
        if norm > factor * median
    }


def aggregate_round(
    strategy: "Strategy", global_params: "Params", results: Mapping[str, Tuple["Params", float]]
) -> Tuple["Params", List[str], Dict[str, str]]:
    """Validate every result, then aggregate the accepted ones: ``(new_params, accepted, rejected)``.

    ``results`` maps site name to ``(full parameters, example count)``. Accepted sites are returned
    sorted by name and aggregated in that order, so the new model does not depend on arrival order.
    With nothing accepted the global parameters come back unchanged and the strategy does not step;
    the controller stops the job when ``accepted`` is shorter than its ``min_clients``.
    """
    rejected: Dict[str, str] = {}
    survivors: Dict[str, Tuple["Params", float]] = {}
    for site in sorted(results):
        params, num_examples = results[site]
        reason = strategy.validate(global_params, params, num_examples)
        if reason is None:
            survivors[site] = (params, float(num_examples))
        else:
            rejected[site] = reason
    rejected.update(strategy.validate_round(global_params, survivors))
    accepted = [site for site in survivors if site not in rejected]
    if not accepted:
        return dict(global_params), [], dict(sorted(rejected.items()))
    new_params = strategy.aggregate(global_params, [survivors[site] for site in accepted])
    return new_params, accepted, dict(sorted(rejected.items()))
