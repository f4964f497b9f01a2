"""Zeroth-order (forward-only) gradient estimates from seeded perturbations, and their exact replay.

Pure tensor functions (no nvflare import) behind :mod:`flaretune.train.forward_only`. The estimator is
the two-point, central-difference one of SPSA (Spall, 1992) / MeZO (Malladi et al., 2023,
arXiv:2305.17333) that FwdLLM (Xu et al., ATC'24, arXiv:2308.13894) runs on LoRA tensors:

    p_k = (L(w + eps z_k) - L(w - eps z_k)) / (2 eps)        (one scalar per perturbation)
    g   = (1/K) sum_k p_k z_k                                 (E[g] -> grad L as eps -> 0)

with z_k ~ N(0, I) over every trainable tensor. Variance control, in this order:

1. **Antithetic pairs**: each direction is evaluated at +eps and -eps, which cancels the even terms of the
   Taylor expansion (the one-sided difference keeps the curvature term in its bias).
2. **Averaging over K perturbations**: the estimate's variance falls as 1/K.
3. **FwdLLM's discriminative perturbation selection** (``candidates`` > 1, section 4.2 of the paper):
   for each of the K slots, ``candidates`` directions are drawn and the one whose |cosine| with a
   reference gradient is largest is kept. FwdLLM's reference is the previous round's global gradient;
   ours is the previous step's estimate (none at a round's first step), which the server can replay as
   well. Each term p_k z_k stays a descent direction whatever z_k is chosen, since
   <grad L, p_k z_k> ~ <grad L, z_k>^2 >= 0.

Shared seeds: direction k of step s of round r is drawn from :func:`perturbation_seed` of the job seed,
so a site sends only its K projections per step and the server rebuilds the very same update with
:func:`replay` — bit for bit, because site and server run the same functions in the same order
(:func:`estimate` and :func:`sgd_update`).
"""

import hashlib
import struct
from typing import List, Optional, Sequence

import torch


def perturbation_seed(job_seed: int, round_index: int, step_index: int, k: int, candidate: int = 0,
                      site: int = 0) -> int:
    """A 63-bit seed for one direction, the same on every machine (SHA-256 of the six integers)."""
    digest = hashlib.sha256(struct.pack("<6q", job_seed, site, round_index, step_index, k, candidate)).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def direction(shapes: Sequence[Sequence[int]], seed: int, dtype=torch.float32) -> List[torch.Tensor]:
    """One standard-normal direction over tensors of ``shapes`` (drawn on the CPU, in this order)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(tuple(s), generator=gen, dtype=dtype) for s in shapes]


def cosine(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Cosine of two tensor lists taken as one flat vector each (0 when either is zero)."""
    dot = sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b))
    na = sum(float(x.double().pow(2).sum()) for x in a) ** 0.5
    nb = sum(float(y.double().pow(2).sum()) for y in b) ** 0.5
    return dot / (na * nb) if na > 0 and nb > 0 else 0.0


def choose_direction(shapes, job_seed: int, round_index: int, step_index: int, k: int, candidates: int = 1,
                     reference: Optional[Sequence[torch.Tensor]] = None, site: int = 0) -> List[torch.Tensor]:
    """Direction ``k`` of a step: with ``candidates`` > 1 and a reference, the candidate of largest |cosine|
    with it (FwdLLM's selection); otherwise the first candidate."""
    seed = perturbation_seed(job_seed, round_index, step_index, k, 0, site)
    best = direction(shapes, seed)
    if candidates <= 1 or reference is None:
        return best
    best_score = abs(cosine(best, reference))
    for c in range(1, candidates):
        z = direction(shapes, perturbation_seed(job_seed, round_index, step_index, k, c, site))
        score = abs(cosine(z, reference))
        if score > best_score:
            best, best_score = z, score
    return best


def projection(loss_plus: float, loss_minus: float, epsilon: float) -> float:
    """Central difference: the directional derivative along z, rounded to float32 (what travels)."""
    return float(torch.tensor((loss_plus - loss_minus) / (2.0 * epsilon), dtype=torch.float32))


def estimate(directions: Sequence[Sequence[torch.Tensor]], projections: Sequence[float]) -> List[torch.Tensor]:
    """g = (1/K) sum_k p_k z_k, accumulated in k order (float32)."""
    if len(directions) != len(projections) or not directions:
        raise ValueError(f"need one projection per direction, got {len(projections)} for {len(directions)}")
    out = [torch.zeros_like(t) for t in directions[0]]
    for z, p in zip(directions, projections):
        for o, t in zip(out, z):
            o.add_(t, alpha=float(p))
    k = float(len(directions))
    return [o.div_(k) for o in out]


def sgd_update(params: Sequence[torch.Tensor], grad: Sequence[torch.Tensor], learning_rate: float) -> None:
    """w <- w - lr * g, in place (the one update op site and server both run)."""
    with torch.no_grad():
        for p, g in zip(params, grad):
            p.sub_(g.to(device=p.device, dtype=p.dtype), alpha=learning_rate)


def replay(params: Sequence[torch.Tensor], projections: Sequence[Sequence[float]], job_seed: int,
           round_index: int, learning_rate: float, candidates: int = 1, site: int = 0) -> List[torch.Tensor]:
    """The server side of shared-seed mode: the site's trainable tensors after its round.

    ``params``: the round's starting tensors (the global ones), in the order the site's step saw them;
    ``projections``: K floats per step, as uploaded. Returns new tensors; ``params`` are left untouched.
    """
    work = [p.detach().clone().float() for p in params]
    shapes = [tuple(p.shape) for p in work]
    previous = None
    for s, step_projections in enumerate(projections):
        dirs = [choose_direction(shapes, job_seed, round_index, s, k, candidates, previous, site)
                for k in range(len(step_projections))]
        previous = estimate(dirs, step_projections)
        sgd_update(work, previous, learning_rate)
    return work
