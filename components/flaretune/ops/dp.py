"""Clipping and Gaussian noise for differential privacy: pure functions, no FLARE import.

The Gaussian mechanism adds N(0, (z·C)²) to each coordinate of a sum whose L2 sensitivity is bounded
by clipping to C; z is the noise multiplier the accountant sees. Two users here:

* client-level DP (McMahan et al., 2018, arXiv:1710.06963): clip a site's whole model update to C by its
  global L2 norm over all tensors, then add noise — :func:`clip_by_global_norm`, :func:`add_gaussian_noise`;
* record-level DP-SGD (Abadi et al., 2016, arXiv:1607.00133): clip each example's gradient to C, sum,
  add noise — :func:`clip_and_sum_per_sample` (torch), used by :mod:`flaretune.train.dp_sgd`.

Noise comes from a generator seeded with 128 bits (numpy) or 63 bits (torch) from the OS's CSPRNG
(:mod:`secrets`), never from a job's seed: a seed in a job config would let anyone regenerate the noise
and subtract it. Tests may pass their own generator.
"""

import secrets
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np


def secure_rng() -> np.random.Generator:
    """A numpy generator (PCG64) seeded with 128 bits from the OS's CSPRNG."""
    return np.random.Generator(np.random.PCG64(secrets.randbits(128)))


def secure_torch_generator(device="cpu"):
    """A ``torch.Generator`` seeded with 63 bits from the OS's CSPRNG (torch seeds are 64-bit)."""
    import torch

    return torch.Generator(device=device).manual_seed(secrets.randbits(63))


def check_dp_args(noise_multiplier, clip_norm, owner: str, clip_name: str = "clip_norm") -> None:
    """One-line ValueError unless ``noise_multiplier`` > 0 and the clip bound > 0 are finite numbers."""
    for name, value in (("noise_multiplier", noise_multiplier), (clip_name, clip_norm)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} for {owner} must be a finite number > 0, got {value!r}")


def global_l2_norm(tensors: Mapping[str, np.ndarray]) -> float:
    """L2 norm of all tensors taken together (float64 accumulation)."""
    return float(np.sqrt(sum(float(np.sum(np.square(t, dtype=np.float64))) for t in tensors.values())))


def clip_by_global_norm(tensors: Mapping[str, np.ndarray], clip_norm: float) -> Tuple[Dict[str, np.ndarray], float]:
    """``(clipped, norm)``: every tensor scaled by ``min(1, C / norm)`` (float64), so the global norm is ≤ C.

    A tensor set already within the bound is returned as float64 copies, unscaled. A non-finite norm
    raises: it would make the clipped update (and the noise added to it) meaningless.
    """
    norm = global_l2_norm(tensors)
    if not np.isfinite(norm):
        raise ValueError(f"the update's L2 norm is {norm}: NaN or inf in the update")
    scale = 1.0 if norm <= clip_norm else clip_norm / norm
    return {k: np.asarray(t, dtype=np.float64) * scale for k, t in tensors.items()}, norm


def add_gaussian_noise(tensors: Mapping[str, np.ndarray], std: float,
                       rng: Optional[np.random.Generator] = None) -> Dict[str, np.ndarray]:
    """Each tensor plus i.i.d. N(0, std²) per coordinate (float64), from ``rng`` or :func:`secure_rng`."""
    if not std > 0:
        raise ValueError(f"noise std must be > 0, got {std}")
    rng = rng if rng is not None else secure_rng()
    return {k: np.asarray(t, dtype=np.float64) + rng.normal(0.0, std, size=np.shape(t)) for k, t in tensors.items()}


def clip_and_sum_per_sample(per_sample: List, max_norm: float):
    """``(summed, norms)`` for per-example gradients ``per_sample`` (one tensor ``[B, *shape]`` per parameter).

    Example b's gradient, over all parameters together, is scaled by ``min(1, C / ||g_b||)``
    (Abadi et al., 2016, Algorithm 1), then the examples are summed: each example moves the sum by at
    most C, the sensitivity the noise is calibrated to. ``norms`` are the unclipped per-example norms.
    """
    import torch

    flat = torch.stack([g.reshape(g.shape[0], -1).pow(2).sum(1) for g in per_sample]).sum(0)
    norms = flat.sqrt()
    if not bool(torch.isfinite(norms).all()):
        raise ValueError("a per-example gradient has NaN or inf entries")
    scale = (max_norm / (norms + 1e-12)).clamp(max=1.0)  # the epsilon only guards the division
    return [torch.einsum("b,b...->...", scale.to(g.dtype), g) for g in per_sample], norms
